"""What is inside the product images, and the compose stack of them answering both routes."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from router.contract import DEPENDENCIES
from services.contracts.build_layout import BuildLayout
from services.stack.demo import run_demo
from services.stack.samples import sample_queries
from tests.images.conftest import ComposeStack, Docker, image

PRODUCT = ["router", "batch", "triton"]
# Debian packages of a compiler toolchain (gcc-12, binutils-x86-64-linux-gnu, ... too); none
# belongs in a serving or batch image.
BUILD_PACKAGES = re.compile(
    r"(gcc|g\+\+|cpp|make|cmake|clang|binutils|build-essential|libc6-dev|libgcc-\d+-dev"
    r"|(lib)?python3(\.\d+)?-dev)(-\d+)?(-x86-64-linux-gnu)?"
)
BUILD_COMMANDS = ["gcc", "cc", "c++", "g++", "make", "ld", "as", "cmake"]
CACHED_PER_TASK = 2


def debian_packages(docker: Docker, name: str) -> set[str]:
    listed = docker.run(
        "run", "--rm", "--entrypoint", "dpkg-query", name, "-W", "-f", "${Package}\\n"
    )
    return {line.split(":")[0] for line in listed.split()}


def python_packages(docker: Docker, name: str) -> set[str]:
    listed = docker.run(
        "run", "--rm", "--entrypoint", "python", name, "-m", "pip", "list", "--format", "json"
    )
    return {entry["name"].lower().replace("_", "-") for entry in json.loads(listed)}


@pytest.mark.parametrize("component", PRODUCT)
def test_image_runs_as_the_non_root_user(docker: Docker, component: str) -> None:
    config = docker.inspect("image", image(component))["Config"]
    assert config["User"] == "10001:10001", config["User"]
    uid = docker.run("run", "--rm", "--entrypoint", "id", image(component), "-u")
    assert uid.strip() == "10001"


@pytest.mark.parametrize("component", ["router", "batch"])
def test_image_holds_no_build_tools(docker: Docker, component: str) -> None:
    packages = debian_packages(docker, image(component))
    # The listing is real: the C library is in every image.
    assert "libc6" in packages, sorted(packages)
    toolchain = sorted(p for p in packages if BUILD_PACKAGES.fullmatch(p))
    assert not toolchain, toolchain
    # The pattern is real: it knows a toolchain's package names when it sees them.
    assert all(BUILD_PACKAGES.fullmatch(p) for p in ("gcc-12", "binutils-x86-64-linux-gnu"))
    found = docker.run(
        "run", "--rm", "--entrypoint", "sh", image(component), "-c",
        " ".join(f"command -v {tool};" for tool in BUILD_COMMANDS) + " true",
    )  # fmt: skip
    assert found.split() == [], found


def test_router_image_holds_no_torch_and_no_triton(docker: Docker) -> None:
    packages = python_packages(docker, image("router"))
    assert {"switchyard-serving", "tritonclient", "grpcio", "redis"} <= packages, packages
    unwanted = {"torch", "nvidia-pytriton", "ray", "transformers", "onnxruntime", "peft"}
    assert not packages & unwanted, sorted(packages & unwanted)
    # No tritonserver binary either, from any source.
    found = docker.run(
        "run", "--rm", "--entrypoint", "sh", image("router"), "-c",
        "find / -xdev -name 'tritonserver*' 2>/dev/null; true",
    )  # fmt: skip
    assert found.split() == [], found


def test_batch_and_triton_images_hold_what_they_run(docker: Docker) -> None:
    batch = python_packages(docker, image("batch"))
    assert {"torch", "transformers", "peft", "optimum", "onnxruntime", "ray"} <= batch
    triton = python_packages(docker, image("triton"))
    assert {"nvidia-pytriton", "onnxruntime"} <= triton
    assert "torch" not in triton


@pytest.mark.parametrize("service", ["router", "triton"])
def test_served_containers_run_read_only_as_non_root(stack: ComposeStack, service: str) -> None:
    container = stack.container(service)
    state = stack.docker.inspect("container", container)
    assert state["HostConfig"]["ReadonlyRootfs"] is True
    assert state["Config"]["User"] == "10001:10001"
    assert state["State"]["Health"]["Status"] == "healthy"
    written = subprocess.run(
        [stack.docker.cli, "exec", container, "sh", "-c", "touch /opt/venv/written"],
        capture_output=True,
        text=True,
        timeout=60,
        env=stack.env,
    )
    assert written.returncode != 0 and "Read-only file system" in written.stderr, written


def test_batch_container_runs_read_only_as_non_root(stack: ComposeStack) -> None:
    written = stack.compose_result(
        "--profile", "batch", "run", "--rm", "--no-deps", "--pull", "never", "batch",
        "sh", "-c", "id -u; touch /opt/venv/written",
    )  # fmt: skip
    assert written.returncode != 0, written
    assert written.stdout.split() == ["10001"], written
    assert "Read-only file system" in written.stderr, written


def test_prometheus_scrapes_the_router_and_triton_containers(stack: ComposeStack) -> None:
    """Compose's Prometheus (the stand-in) finds both metrics ports and loads the rules."""
    deadline = time.monotonic() + 60
    while True:
        with urllib.request.urlopen(f"{stack.prometheus_url}/api/v1/targets", timeout=5) as r:
            targets = json.load(r)["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        if set(health.values()) == {"up"} or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert health == {"switchyard-router": "up", "triton": "up"}, targets
    with urllib.request.urlopen(f"{stack.prometheus_url}/api/v1/rules", timeout=5) as r:
        groups = json.load(r)["data"]["groups"]
    assert groups and all(group["rules"] for group in groups), groups


def test_both_routes_answer_through_the_containers(stack: ComposeStack, tmp_path: Path) -> None:
    """The batch image labels a few of each task's sample queries into Redis; then the router
    container answers those from the cache and other texts from the CPU Triton container."""
    layout = BuildLayout(stack.build_dir)
    report = layout.read_report()
    assert report is not None and report.tasks, f"{stack.build_dir} holds no build report"
    queries = tmp_path / "queries"
    queries.mkdir()
    queries.chmod(0o755)  # the batch container's user reads it
    for task in report.tasks:
        cached = sample_queries(layout, task).cached[:CACHED_PER_TASK]
        lines = "".join(json.dumps({"text": text}) + "\n" for text in cached)
        (queries / f"{task}.jsonl").write_text(lines, encoding="utf-8")
        (queries / f"{task}.jsonl").chmod(0o644)
        stack.compose(
            "--profile", "batch", "run", "--rm", "--no-deps", "--pull", "never",
            "--volume", f"{queries}:/ci-queries:ro",
            "batch", "switchyard", "batch", "run", "--task", task,
            "--input", f"/ci-queries/{task}.jsonl",
            timeout=600,
        )  # fmt: skip

    answers = run_demo(stack.router_address, layout, timeout_s=10.0)
    routes = {task: {a.route for a in answers if a.task == task} for task in report.tasks}
    assert routes == {task: {"cache", "model"} for task in report.tasks}, answers
    cached = [a for a in answers if a.route == "cache"]
    # Each task: its two cached texts and the case and spacing variant of the first.
    assert len(cached) == (CACHED_PER_TASK + 1) * len(report.tasks), answers

    # The CLI a user runs, against the containers.
    demo = subprocess.run(
        [str(Path(sys.executable).parent / "switchyard"), "demo", "--address",
         stack.router_address, "--build", str(stack.build_dir)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "120"},
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "cache" in demo.stdout and "model" in demo.stdout, demo.stdout
    print(demo.stdout)


def test_router_health_check_names_the_dependencies_that_are_down(stack: ComposeStack) -> None:
    """The router container's health check command: SERVING (exit 0) while either route can
    answer, exit 1 naming both once Redis and Triton are stopped, and 0 again once they are
    back (the router reconnects by itself)."""

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [stack.docker.cli, "exec", stack.container("router"), "switchyard", "router",
             "check", "--address", "127.0.0.1:50051"],
            capture_output=True, text=True, timeout=60, env=stack.env,
        )  # fmt: skip

    def until(done: Callable[[subprocess.CompletedProcess[str]], bool]) -> str:
        deadline = time.monotonic() + 30
        while not done(result := check()) and time.monotonic() < deadline:
            time.sleep(1)
        assert done(result), result
        return result.stderr

    until(lambda result: result.returncode == 0)
    stack.compose("stop", *DEPENDENCIES)
    try:
        said = until(lambda result: result.returncode == 1)
        assert f"NOT_SERVING ({', '.join(DEPENDENCIES)} not serving)" in said, said
    finally:
        stack.compose("up", "--detach", "--no-build", "--pull", "never", "--wait", *DEPENDENCIES)
    until(lambda result: result.returncode == 0)
