"""A private Redis, Triton and router on free loopback ports that scenarios may break.

Every process is started here and stopped by `Testbed.stop` (or the context manager), also
when a scenario fails half way.
"""

import os
import shutil
import sys
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
import redis.cluster
import yaml

from router.client import RequestError, RouterClient, TlsConfig
from services.contracts.cache_schema import (
    GENERATIONS_CHANNEL,
    CachedPrediction,
    generation_key,
    prediction_key,
)
from services.contracts.model_repository import model_names
from services.processes.ports import free_port
from services.processes.redis_server import RedisServer
from services.processes.supervisor import ChildProcess, StartFailed
from services.reliability.proxy import StallingProxy
from services.triton.server import TritonServer, TritonSettings

__all__ = ["RouterProcess", "Testbed", "publish_generation"]

_SWITCHYARD = [sys.executable, "-m", "services.cli"]


def _answers(probe: RouterClient, serving: bool) -> bool:
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
                self.process.wait_ready(lambda: _answers(probe, serving), timeout_s)
        except StartFailed as exc:
            self.stop()
            raise RuntimeError(f"{exc}:\n{self.log_text()[-3000:]}") from None

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def signal(self, signum: int) -> None:
        if self.process is not None:
            self.process.signal(signum)

    def stop(self) -> int | None:
        """SIGTERM, SIGKILL after 15 s; returns the exit code (None if it was not running)."""
        process, self.process = self.process, None
        return None if process is None else process.stop(15.0)


def publish_generation(
    client: "redis.Redis | redis.cluster.RedisCluster",
    namespace: str,
    labels: list[str],
    answers: dict[str, str],
) -> str:
    """Write a complete generation of teacher answers, flip the pointer, announce it: what the
    batch job does, without the teacher."""
    generation = uuid.uuid4().hex[:12]
    with client.pipeline(transaction=False) as pipe:
        for text, label in answers.items():
            scores = {name: (0.9 if name == label else 0.1 / (len(labels) - 1)) for name in labels}
            prediction = CachedPrediction(label, scores, "teacher-test", "7", time.time())
            pipe.set(prediction_key(namespace, generation, text), prediction.to_json(), ex=3600)
        pipe.execute()
    client.set(generation_key(namespace), generation)
    client.publish(GENERATIONS_CHANNEL, f"{namespace} {generation}")
    return generation


class Testbed:
    """Redis (saving to disk on shutdown, so a restart keeps the cache), Triton and a router."""

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, directory: Path, repository: Path, **router_overrides: Any) -> None:
        # A bounded Triton timeout and a shutdown delay, so both can be checked.
        router_overrides = {
            "triton_timeout_ms": 1000.0,
            "shutdown_delay_seconds": 1.0,
            # So a version that never becomes READY is reported within a scenario.
            "version_ready_timeout_seconds": 3.0,
        } | router_overrides
        self.router_overrides = router_overrides
        """The router's settings beyond a test deployment's, for a second router alike."""
        self.directory = directory
        # A copy of its own (hard links), so a scenario may publish versions into it.
        self.repository = directory / "model_repository"
        shutil.copytree(repository, self.repository, copy_function=os.link)
        repository = self.repository
        models = model_names(repository)
        if not models:
            raise ValueError(f"the model repository {repository} holds no model")
        self.task = models[0]
        """The task the scenarios exercise: the repository's first model."""
        self.redis = RedisServer(directory, persistent=True)
        self.triton_settings = TritonSettings(
            repository=repository,
            grpc_port=free_port(),
            http_port=free_port(),
            metrics_port=free_port(),
        )
        self.triton = TritonServer(self.triton_settings)
        # The launcher's watch: new and removed versions reach Triton (`TritonServer.serve`,
        # which would end when a scenario stops Triton on purpose).
        self._stop_watching = threading.Event()
        self._triton_lock = threading.Lock()  # no mirroring while Triton restarts
        self._watcher = threading.Thread(target=self._mirror_versions, daemon=True)
        # The router reaches Triton through a proxy that can stall, as a stuck Triton would.
        self.triton_proxy = StallingProxy(self.triton_settings.grpc_port)
        self.router = RouterProcess(
            directory, repository, self.redis.url, self.triton_proxy.port, **router_overrides
        )

    def start(self) -> None:
        try:
            self.redis.start()
            self.triton.start()
            self._watcher.start()
            self.triton_proxy.start()
            self.router.start()
        except BaseException:
            self.stop()
            raise

    def _mirror_versions(self) -> None:
        while not self._stop_watching.wait(self.triton_settings.poll_seconds):
            with self._triton_lock:
                self.triton.runtime.sync()

    def restart_triton(self) -> None:
        with self._triton_lock:
            self.triton.stop()
            self.triton = TritonServer(self.triton_settings)
            self.triton.start()

    def stall_triton(self, stalled: bool) -> None:
        """Stop (or resume) every byte between the router and Triton: a model that answers
        nothing, for as long as the stall lasts."""
        self.triton_proxy.stall(stalled)

    def stop(self) -> None:
        self.router.stop()
        self._stop_watching.set()
        if self._watcher.is_alive():
            self._watcher.join()
        self.triton_proxy.stop()
        self.triton.stop()
        self.redis.stop()

    def __enter__(self) -> "Testbed":
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
