"""Integration fixtures: one tiny model build, one real Triton and one router per session (the
session's Redis is tests/conftest.py's)."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.processes.ports import free_port
from services.processes.redis_server import RedisServer
from services.reliability.testbed import RouterProcess
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
