"""`switchyard router serve` in a child process with settings of its own: the router the
reliability testbed breaks, the benchmark's private routers, and the integration tests'."""

import os
import sys
from pathlib import Path
from typing import Any

import yaml

from router.client import RequestError, RouterClient, TlsConfig
from services.processes.ports import free_port
from services.processes.supervisor import ChildProcess, StartFailed

__all__ = ["RouterProcess", "answers"]

_SWITCHYARD = [sys.executable, "-m", "services.cli"]


def answers(probe: RouterClient, serving: bool = True) -> bool:
    """Whether health says SERVING (or, unless `serving`, answers at all)."""
    try:
        return probe.health() == "SERVING" or not serving
    except RequestError:
        return False


class RouterProcess:
    """`switchyard router serve` in a child process, with its own settings file and log.

    The settings are those of a test deployment: fast health polls and breaker resets, small
    limits; `overrides` replace any of them. `env` is added to the child's environment, and
    `tls` makes every client of it (the readiness check too) speak TLS.
    """

    def __init__(
        self,
        directory: Path,
        repository: Path,
        redis_url: str,
        triton_port: int,
        *,
        env: dict[str, str] | None = None,
        tls: TlsConfig | None = None,
        **overrides: Any,
    ) -> None:
        self.tls = tls
        self.grpc_port = free_port()
        self.metrics_port = free_port()
        self.address = f"127.0.0.1:{self.grpc_port}"
        self.config = directory / f"router-{self.grpc_port}.yaml"
        self.log = directory / f"router-{self.grpc_port}.log"
        self.env = env or {}
        settings: dict[str, Any] = {
            "model_repository": str(repository.resolve()),
            "redis_url": redis_url,
            "triton_url": f"127.0.0.1:{triton_port}",
            "grpc_port": self.grpc_port,
            "metrics_port": self.metrics_port,
            "health_poll_seconds": 0.2,
            "breaker_reset_seconds": 0.5,
            "max_batch_texts": 8,
        }
        self.settings = settings | overrides
        self.config.write_text(yaml.safe_dump(self.settings))
        self.process: ChildProcess | None = None

    def client(self, **options: Any) -> RouterClient:
        """A client of this router (TLS when the router has it); `options` as RouterClient's."""
        return RouterClient(self.address, tls=self.tls, **{"retries": 0} | options)

    def start(self, timeout_s: float = 60.0, serving: bool = True) -> None:
        """Start, and wait until health says SERVING (or answers at all, unless `serving`)."""
        command = [*_SWITCHYARD, "router", "serve", "--config", str(self.config)]
        self.process = ChildProcess.start(
            "router",
            command,
            self.log,
            address=self.address,
            env={**os.environ, **self.env},
            stop_with_parent=True,
        )
        try:
            with self.client(timeout_s=1.0) as probe:
                self.process.wait_ready(lambda: answers(probe, serving), timeout_s)
        except StartFailed as exc:
            self.stop()
            raise RuntimeError(f"{exc}:\n{self.log_text()[-3000:]}") from None

    @property
    def pid(self) -> int:
        """The router's process id; 0 when it is not running."""
        return 0 if self.process is None else self.process.pid

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def signal(self, signum: int) -> None:
        if self.process is not None:
            self.process.signal(signum)

    def stop(self) -> int | None:
        """SIGTERM, SIGKILL after 15 s; returns the exit code (None if it was not running)."""
        process, self.process = self.process, None
        return None if process is None else process.stop(15.0)
