"""Shared fixtures: one tiny model build, one real Triton, Redis and router per session."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.ports import free_port
from services.redis_server import RedisServer
from services.triton.server import TritonServer, TritonSettings

SWITCHYARD = [sys.executable, "-m", "services.cli"]
TINY_BUILD_OPTIONS = [
    "--profile", "quick", "--max-train", "80", "--max-eval", "48",
    "--teacher-steps", "4", "--student-steps", "6",
]  # fmt: skip


def run_switchyard(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a child process, as a user would, and capture its output."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(
        [*SWITCHYARD, *args], capture_output=True, text=True, env=env, timeout=900
    )
    if check and result.returncode != 0:
        raise AssertionError(f"switchyard {' '.join(args)} failed:\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A build of both tasks on tiny subsets: the same code path as the quick profile."""
    out = tmp_path_factory.mktemp("build") / "out"
    run_switchyard("models", "build", "--out", str(out), *TINY_BUILD_OPTIONS)
    return out


def triton_settings(repository: Path, **overrides: Any) -> TritonSettings:
    """Settings for a Triton on free loopback ports."""
    return TritonSettings(
        repository=repository,
        grpc_port=free_port(),
        http_port=free_port(),
        metrics_port=free_port(),
        **overrides,
    )


@pytest.fixture(scope="session")
def triton(tiny_build: Path) -> Iterator[TritonServer]:
    """One real Triton serving the tiny build, shared by the whole test session."""
    server = TritonServer(triton_settings(tiny_build / "model_repository"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


class RouterProcess:
    """`switchyard router serve` in a child process, with its own settings file: `settings`
    add to or replace the defaults below, `env` is added to the child's environment, and
    `credentials` make every channel to it (the readiness check too) a TLS channel."""

    def __init__(
        self,
        directory: Path,
        repository: Path,
        redis_url: str,
        triton_port: int,
        *,
        env: dict[str, str] | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        **settings: Any,
    ) -> None:
        self.env = env or {}
        self.credentials = credentials
        self.grpc_port = free_port()
        self.metrics_port = free_port()
        self.address = f"127.0.0.1:{self.grpc_port}"
        self.config = directory / "router.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "model_repository": str(repository),
                    "redis_url": redis_url,
                    "triton_url": f"127.0.0.1:{triton_port}",
                    "grpc_port": self.grpc_port,
                    "metrics_port": self.metrics_port,
                    "health_poll_seconds": 0.2,
                    "breaker_reset_seconds": 0.5,
                    "max_batch_texts": 8,
                    "tasks": {
                        "topic": {"model": "topic", "max_text_length": 500},
                        "sentiment": {"model": "sentiment", "max_text_length": 280},
                    },
                }
                | settings
            )
        )
        self.process: subprocess.Popen[str] | None = None

    def channel(self) -> grpc.Channel:
        if self.credentials is None:
            return grpc.insecure_channel(self.address)
        return grpc.secure_channel(self.address, self.credentials)

    def start(self, serving: bool = True) -> None:
        """Start, and wait until health says SERVING (or answers at all, unless `serving`)."""
        self.process = subprocess.Popen(
            [*SWITCHYARD, "router", "serve", "--config", str(self.config)],
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**os.environ, **self.env},
        )
        health = health_pb2_grpc.HealthStub(self.channel())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"router exited: {self.process.stderr.read()}")  # type: ignore[union-attr]
            try:
                status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING or not serving:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
        raise AssertionError("router did not become healthy within 60 s")

    def stop(self) -> str:
        """Stop the router; returns what it wrote to stderr (its log) and was not read yet."""
        log = ""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(15)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            log = self.process.stderr.read()  # type: ignore[union-attr]
        self.process = None
        return log


@pytest.fixture(scope="session")
def router(
    tiny_build: Path,
    triton: TritonServer,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RouterProcess]:
    """One router on the shared Redis and Triton for the whole session."""
    process = RouterProcess(
        tmp_path_factory.mktemp("router"),
        tiny_build / "model_repository",
        redis_server.url,
        triton.settings.grpc_port,
    )
    try:
        process.start()
        yield process
    finally:
        process.stop()
