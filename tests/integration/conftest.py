"""Integration fixtures: one tiny model build, one real Triton and one router per session (the
session's Redis is tests/conftest.py's)."""

import os
import shutil
import site
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.processes.redis_server import RedisServer
from services.stack.router_process import RouterProcess
from services.triton.server import TritonServer, TritonSettings

ROOT = Path(__file__).resolve().parents[2]
SWITCHYARD = [sys.executable, "-m", "services.cli"]
TINY_BUILD_OPTIONS = [
    "--profile", "quick", "--max-train", "80", "--max-eval", "48",
    "--teacher-steps", "4", "--student-steps", "6",
]  # fmt: skip


# Text limits below the shipped task files', so the tests can reach them with small texts.
TASK_LIMITS = {"tasks": {"topic": {"max_text_length": 500}, "sentiment": {"max_text_length": 280}}}


def run_switchyard(
    *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a child process, as a user would (with `env` added to the environment),
    and capture its output."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    result = subprocess.run(
        [*SWITCHYARD, *args], capture_output=True, text=True, env=env, timeout=900
    )
    if check and result.returncode != 0:
        raise AssertionError(f"switchyard {' '.join(args)} failed:\n{result.stderr[-4000:]}")
    return result


@dataclass(frozen=True)
class Installed:
    """`switchyard` installed from its wheel into a virtual environment of its own, run from
    an empty folder outside the checkout."""

    venv: Path
    workdir: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        env.pop("PYTHONPATH", None)
        result = subprocess.run(
            [str(self.venv / "bin" / "switchyard"), *args],
            capture_output=True, text=True, env=env, cwd=self.workdir, timeout=900,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"switchyard {' '.join(args)} failed:\n{result.stderr[-4000:]}")
        return result


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel built from this checkout, installed (not editable) into a new venv.

    Only the project comes from the wheel: the venv finds the pinned third-party packages
    through a .pth line naming this environment's site-packages (installing torch and the
    rest again would take minutes). That directory's own .pth files, among them the editable
    install's finder, are not run from there, so nothing of the checkout is importable."""
    scratch = tmp_path_factory.mktemp("installed")
    # Built from a copy: setuptools leaves build/ and *.egg-info where it builds, and build/
    # is also the default model folder of `switchyard up`.
    source = scratch / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("router", "services", "bench"):
        shutil.copytree(ROOT / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(scratch / "dist"), str(source)],
                   check=True, timeout=600)  # fmt: skip
    (wheel,) = (scratch / "dist").glob("switchyard_serving-*.whl")
    venv = scratch / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run([*pip, "--python", str(venv / "bin" / "python"), "install", "--no-deps",
                    str(wheel)], check=True, timeout=300)  # fmt: skip
    (target,) = (venv / "lib").glob("python3*/site-packages")
    (target / "switchyard-dependencies.pth").write_text(site.getsitepackages()[0] + "\n")
    workdir = scratch / "work"
    workdir.mkdir()
    return Installed(venv, workdir)


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A build of both tasks on tiny subsets: the same code path as the quick profile."""
    out = tmp_path_factory.mktemp("build") / "out"
    run_switchyard("models", "build", "--out", str(out), *TINY_BUILD_OPTIONS)
    return out


def triton_settings(repository: Path, **overrides: Any) -> TritonSettings:
    """Settings for a Triton on free loopback ports."""
    return TritonSettings.on_free_ports(repository, **overrides)


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
        **TASK_LIMITS,
    )
    try:
        process.start()
        yield process
    finally:
        process.stop()
