"""The product images, built by .ci/images, listed and run with docker compose.

Not part of the README's test command: these tests need the images and a Docker engine, which
.ci/images sets up (dockerd in a temporary data root, the images built from a Debian base,
the stand-in Redis) before it runs `pytest tests/images` with:

- DOCKER_HOST, the engine; SWITCHYARD_TEST_DOCKER, its CLI with the compose plugin;
- SWITCHYARD_TEST_BUILD_DIR, the absolute path of the CI build whose models the containers
  serve; SWITCHYARD_TEST_REDIS_IMAGE and SWITCHYARD_TEST_PROMETHEUS_IMAGE, the stand-ins.

A missing variable fails the run: a skip would hide images that were never tested.
"""

import json
import os
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.processes.ports import free_port

REPO = Path(__file__).parents[2]
COMPOSE_FILES = [REPO / "docker-compose.yml", REPO / "tests/images/compose.yml"]
SERVING = ["redis", "triton", "router", "prometheus"]


def required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run these tests through .ci/images", pytrace=False)
    return value


def image(component: str) -> str:
    """The tag .ci/images builds and compose and k8s run: switchyard-<component>:<version>."""
    with (REPO / "pyproject.toml").open("rb") as handle:
        version = tomllib.load(handle)["project"]["version"]
    return f"switchyard-{component}:{version}"


@dataclass(frozen=True)
class Docker:
    cli: str

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> str:
        """The command's stdout; a failure fails the test with the command's output."""
        result = subprocess.run(
            [self.cli, *args], capture_output=True, text=True, timeout=timeout, env=env
        )
        if result.returncode != 0:
            pytest.fail(
                f"{self.cli} {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}",
                pytrace=False,
            )
        return result.stdout

    def inspect(self, kind: str, name: str) -> dict[str, Any]:
        found = json.loads(self.run(kind, "inspect", name))
        assert isinstance(found, list) and len(found) == 1, found
        return dict(found[0])


@pytest.fixture(scope="session")
def docker() -> Docker:
    required_env("DOCKER_HOST")
    return Docker(required_env("SWITCHYARD_TEST_DOCKER"))


@dataclass(frozen=True)
class ComposeStack:
    docker: Docker
    project: str
    env: dict[str, str]
    build_dir: Path
    router_address: str
    prometheus_url: str

    def _compose_args(self) -> list[str]:
        files = [arg for path in COMPOSE_FILES for arg in ("-f", str(path))]
        return ["compose", "-p", self.project, *files]

    def compose(self, *args: str, timeout: float = 300) -> str:
        return self.docker.run(*self._compose_args(), *args, env=self.env, timeout=timeout)

    def compose_result(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """A compose command that may fail: its exit status and output, for the test to judge."""
        return subprocess.run(
            [self.docker.cli, *self._compose_args(), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
        )

    def logs(self) -> str:
        """The services' last log lines, for a failure's report (never fails itself)."""
        result = self.compose_result("logs", "--no-color", "--tail", "60", timeout=60)
        return result.stdout + result.stderr

    def container(self, service: str) -> str:
        ids = self.compose("ps", "-q", service).split()
        assert len(ids) == 1, f"{service}: containers {ids}"
        return ids[0]


@pytest.fixture(scope="session")
def stack(docker: Docker) -> Iterator[ComposeStack]:
    """redis and prometheus (the stand-ins), the CPU triton and the router, up and healthy,
    on the CI build."""
    build_dir = Path(required_env("SWITCHYARD_TEST_BUILD_DIR"))
    assert build_dir.is_absolute() and (build_dir / "model_repository").is_dir(), build_dir
    router_port, prometheus_port = free_port(), free_port()
    env = {
        **os.environ,
        "SWITCHYARD_TEST_REDIS_IMAGE": required_env("SWITCHYARD_TEST_REDIS_IMAGE"),
        "SWITCHYARD_TEST_PROMETHEUS_IMAGE": required_env("SWITCHYARD_TEST_PROMETHEUS_IMAGE"),
        "SWITCHYARD_TEST_BUILD_DIR": str(build_dir),
        "SWITCHYARD_ROUTER_PORT": str(router_port),
        "SWITCHYARD_PROMETHEUS_PORT": str(prometheus_port),
    }
    running = ComposeStack(
        docker,
        f"switchyard-images-{os.getpid()}",
        env,
        build_dir,
        router_address=f"127.0.0.1:{router_port}",
        prometheus_url=f"http://127.0.0.1:{prometheus_port}",
    )
    try:
        # Built already, never pulled: compose must run exactly the images under test.
        running.compose(
            "up", "--detach", "--no-build", "--pull", "never",
            "--wait", "--wait-timeout", "240", *SERVING,
            timeout=300,
        )  # fmt: skip
        yield running
    except BaseException:
        print(running.logs())
        raise
    finally:
        running.compose("down", "--volumes", "--remove-orphans", "--timeout", "10")
