"""A real `redis-server` child process on loopback, for tests, benchmarks and the local stack."""

import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

from services.ports import free_port

__all__ = ["RedisServer"]


class RedisServer:
    """redis-server in its own folder, on `port` (a free one by default).

    Without persistence by default; `persistent` saves a snapshot on shutdown and loads it on
    the next start, so a restarted server keeps its data.
    """

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        persistent: bool = False,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.url = f"redis://{host}:{self.port}/0"
        self._directory = directory
        self._persistent = persistent
        self._process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            "redis-server", "--port", str(self.port), "--bind", self.host,
            "--save", "3600 1" if self._persistent else "", "--appendonly", "no",
            "--dir", str(self._directory), "--dbfilename", f"redis-{self.port}.rdb",
        ]  # fmt: skip

    def start(self, timeout_s: float = 10.0) -> None:
        self._process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL)
        client = self.client()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)

    def client(self) -> "redis.Redis":
        return redis.Redis(host=self.host, port=self.port)

    def pause(self, paused: bool) -> None:
        """SIGSTOP or SIGCONT the server: connections stay open and nothing answers."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)

    def stop(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)
            self._process.terminate()
            self._process.wait(10)
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
