"""A real `redis-server` child process on loopback, for tests, benchmarks and the local stack."""

import signal
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from services.processes.ports import free_port
from services.processes.supervisor import ChildProcess, StartFailed

__all__ = ["RedisServer"]


class RedisServer:
    """redis-server in its own folder, on `port` (a free one by default).

    Without persistence by default; `persistent` saves a snapshot on shutdown and loads it on
    the next start, so a restarted server keeps its data. `cluster_node_timeout_ms` makes it
    a node of a Redis Cluster (`services.processes.redis_cluster`), its node file kept in its
    folder so a restarted node rejoins.
    """

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        persistent: bool = False,
        cluster_node_timeout_ms: int | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.url = f"redis://{host}:{self.port}/0"
        self._directory = directory
        self._persistent = persistent
        self._cluster_node_timeout_ms = cluster_node_timeout_ms
        self._bus_port = free_port(host) if cluster_node_timeout_ms is not None else 0
        self._process: ChildProcess | None = None

    def command(self) -> list[str]:
        command = [
            "redis-server", "--port", str(self.port), "--bind", self.host,
            "--save", "3600 1" if self._persistent else "", "--appendonly", "no",
            "--dir", str(self._directory), "--dbfilename", f"redis-{self.port}.rdb",
        ]  # fmt: skip
        if self._cluster_node_timeout_ms is not None:
            command += [
                "--cluster-enabled", "yes",
                # Its own free port: the default, port + 10000, may be taken or out of range.
                "--cluster-port", str(self._bus_port),
                "--cluster-config-file", f"nodes-{self.port}.conf",
                "--cluster-node-timeout", str(self._cluster_node_timeout_ms),
            ]  # fmt: skip
        return command

    def start(self, timeout_s: float = 10.0) -> None:
        log = self._directory / f"redis-{self.port}.log"
        # Stopped with its parent: a killed test run or benchmark leaves no server behind.
        self._process = ChildProcess.start(
            "redis-server", self.command(), log, address=self.url, stop_with_parent=True
        )
        try:
            self._process.wait_ready(self.ping, timeout_s)
        except StartFailed as exc:
            self.stop()
            raise RuntimeError(f"redis-server did not start on port {self.port}: {exc}") from None

    def client(self, **options: Any) -> "redis.Redis":
        """A client of this server; `options` are redis-py's (timeouts, retry, ...)."""
        return redis.Redis(host=self.host, port=self.port, **options)

    def ping(self) -> bool:
        """Whether the server answers within half a second (no retries, no backoff)."""
        client = self.client(
            socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
        )
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def pause(self, paused: bool) -> None:
        """SIGSTOP or SIGCONT the server: connections stay open and nothing answers."""
        if self._process is not None:
            self._process.signal(signal.SIGSTOP if paused else signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self._process is not None

    @property
    def pid(self) -> int:
        """The server's process id; 0 when it is not running."""
        return 0 if self._process is None else self._process.pid

    def stop(self) -> None:
        if self._process is not None:
            self._process.signal(signal.SIGCONT)
            self._process.stop(10.0)
            self._process = None

    def __enter__(self) -> "RedisServer":
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
