"""Shared fixtures: one tiny model build per test session, through the real `switchyard` command."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
