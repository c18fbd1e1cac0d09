"""`switchyard up` and `switchyard down`: Redis, Triton, the router, a first batch run and
(when installed) Prometheus, on loopback, started in dependency order and stopped in reverse.

`up` refuses to start while a recorded stack is alive, checks every port before starting
anything, and stops what it started if a later step fails, so it never leaves half a stack.
"""

import functools
import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import yaml
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from router.client import RouterClient
from services.contracts.build_layout import BuildLayout
from services.contracts.model_repository import CONFIG_FILE
from services.processes.redis_cluster import cluster_nodes, join_cluster
from services.processes.redis_server import RedisServer
from services.processes.supervisor import ChildProcess, ProcessRecord, StartFailed
from services.stack.errors import StackError
from services.stack.health import http_ok
from services.stack.processes import StateFile
from services.stack.prometheus import local_config
from services.stack.router_process import answers
from services.stack.samples import sample_queries

__all__ = ["StackError", "StackSettings", "down", "up"]

# Three masters with one replica each: the smallest cluster that survives losing a master.
_CLUSTER_NODES = 6
_TRITON_PORT_STEP = 10


def _package_file(package: str, name: str) -> Path:
    """A data file shipped inside an installed package (a checkout or a wheel alike)."""
    return Path(str(resources.files(package) / name))


class StackSettings(BaseSettings):
    """Where the local stack lives and listens; SWITCHYARD_STACK_<NAME> overrides any value."""

    model_config = SettingsConfigDict(env_prefix="SWITCHYARD_STACK_", frozen=True)

    state_dir: Path = Path(".switchyard")
    build_dir: Path = Path("build")
    host: str = "127.0.0.1"
    router_port: int = Field(50051, gt=0, lt=65536)
    router_metrics_port: int = Field(9464, gt=0, lt=65536)
    triton_http_port: int = Field(8000, gt=0, lt=65536)
    triton_grpc_port: int = Field(8001, gt=0, lt=65536)
    triton_metrics_port: int = Field(8002, gt=0, lt=65536)
    triton_replicas: int = Field(
        1, ge=1, le=8, description="Tritons; replica i listens on each Triton port + 10 i"
    )
    redis_port: int = Field(6379, gt=0, lt=65531)
    redis_cluster: bool = Field(
        False, description="six cluster nodes on redis_port and the next five ports"
    )
    prometheus_port: int = Field(9090, gt=0, lt=65536)
    scrape_interval_seconds: float = Field(5.0, gt=0)
    ready_timeout_seconds: float = Field(180.0, gt=0)
    stop_grace_seconds: float = Field(15.0, gt=0)
    router_config: Path = Field(default_factory=lambda: _package_file("router", "config.yaml"))

    def redis_ports(self) -> list[int]:
        return [self.redis_port + i for i in range(_CLUSTER_NODES if self.redis_cluster else 1)]

    def triton_ports(self, replica: int) -> tuple[int, int, int]:
        """HTTP, gRPC and metrics ports of Triton replica `replica` (from 0)."""
        step = _TRITON_PORT_STEP * replica
        return (
            self.triton_http_port + step,
            self.triton_grpc_port + step,
            self.triton_metrics_port + step,
        )

    def ports(self) -> dict[str, int]:
        redis = {
            f"redis node {i + 1}" if self.redis_cluster else "redis": port
            for i, port in enumerate(self.redis_ports())
        }
        tritons: dict[str, int] = {}
        for replica in range(self.triton_replicas):
            name = f"triton {replica + 1}" if self.triton_replicas > 1 else "triton"
            http, grpc, metrics = self.triton_ports(replica)
            tritons |= {f"{name} HTTP": http, f"{name} gRPC": grpc, f"{name} metrics": metrics}
        return {
            "router gRPC": self.router_port,
            "router metrics": self.router_metrics_port,
            **tritons,
            **redis,
            "prometheus": self.prometheus_port,
        }


def _switchyard(*args: str) -> list[str]:
    return [sys.executable, "-m", "services.cli", *args]


def _check_ports(settings: StackSettings, with_prometheus: bool) -> None:
    ports = settings.ports()
    if not with_prometheus:
        del ports["prometheus"]
    if len(set(ports.values())) < len(ports):
        raise StackError(f"two services share a port: {ports}")
    for name, port in ports.items():
        with socket.socket() as probe:
            # As the servers do: a closed connection lingering in TIME_WAIT is no conflict.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((settings.host, port))
            except OSError:
                raise StackError(
                    f"port {port} ({name}) on {settings.host} is in use; stop what holds it or "
                    f"choose another with the matching --*-port option"
                ) from None


def _built_tasks(layout: BuildLayout) -> list[str]:
    """The tasks of the build whose model is in its repository."""
    try:
        report = layout.read_report()
    except ValueError as exc:
        raise StackError(str(exc)) from None
    if report is None:
        return []
    repository = layout.model_repository
    return [task for task in sorted(report.tasks) if (repository / task / CONFIG_FILE).is_file()]


def _ensure_models(settings: StackSettings, say: Callable[[str], None]) -> list[str]:
    """The build's tasks; with no build yet, the shipped tasks are built first."""
    layout = BuildLayout(settings.build_dir)
    tasks = _built_tasks(layout)
    if tasks:
        return tasks
    say(f"no models in {settings.build_dir}: building the shipped tasks, quick profile (6 min)")
    build = _switchyard("models", "build", "--profile", "quick", "--out", str(settings.build_dir))
    if subprocess.run(build, check=False).returncode != 0:
        raise StackError("the model build failed; see its output above")
    return _built_tasks(layout)


def _router_config(settings: StackSettings, repository: Path) -> Path:
    config = yaml.safe_load(settings.router_config.read_text(encoding="utf-8"))
    config.update(
        model_repository=str(repository.resolve()),
        redis_url=f"redis://{settings.host}:{settings.redis_port}/0",
        redis_cluster=settings.redis_cluster,
        triton_url=",".join(
            f"{settings.host}:{settings.triton_ports(replica)[1]}"
            for replica in range(settings.triton_replicas)
        ),
        host=settings.host,
        grpc_port=settings.router_port,
        metrics_port=settings.router_metrics_port,
    )
    path = settings.state_dir / "router.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def up(settings: StackSettings, say: Callable[[str], None]) -> list[ProcessRecord]:
    """Start the stack; returns its processes. StackError (nothing left running) on failure."""
    state = StateFile(settings.state_dir)
    running = [p for p in state.load() if p.alive()]
    if running:
        pids = ", ".join(f"{p.name} {p.pid}" for p in running)
        raise StackError(f"a stack is already running ({pids}); run `switchyard down` first")
    prometheus = shutil.which("prometheus")
    _check_ports(settings, with_prometheus=prometheus is not None)
    tasks = _ensure_models(settings, say)
    layout = BuildLayout(settings.build_dir)
    repository = layout.model_repository
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    logs = settings.state_dir / "logs"
    host, timeout = settings.host, settings.ready_timeout_seconds
    started: list[ProcessRecord] = []

    def start(name: str, command: list[str], address: str, ready: Callable[[], bool]) -> None:
        # Detached: the servers outlive this command; `down` stops them by their records.
        try:
            process = ChildProcess.start(name, command, logs / f"{name}.log", address=address)
            started.append(process.record)
            state.save(started)
            process.wait_ready(ready, timeout)
        except StartFailed as exc:
            raise StackError(str(exc)) from None
        say(f"{name} ready on {address} (pid {process.pid})")

    try:
        redis_url = _start_redis(settings, start)
        for replica in range(settings.triton_replicas):
            http, grpc, metrics = settings.triton_ports(replica)
            triton = _switchyard(
                "triton", "serve", "--repository", str(repository), "--host", host,
                "--grpc-port", str(grpc), "--http-port", str(http), "--metrics-port", str(metrics),
            )  # fmt: skip
            name = f"triton-{replica + 1}" if settings.triton_replicas > 1 else "triton"
            ready = f"http://{host}:{http}/v2/health/ready"
            start(name, triton, f"{host}:{grpc}", functools.partial(http_ok, ready))
        router_address = f"{host}:{settings.router_port}"
        router_config = _router_config(settings, repository)
        router = _switchyard("router", "serve", "--config", str(router_config))
        with RouterClient(router_address, timeout_s=2.0, retries=0) as probe:
            start("router", router, router_address, lambda: answers(probe))
        for task in tasks:
            fill_cache(settings, task, redis_url, say)
        if prometheus is not None:
            config = settings.state_dir / "prometheus.yml"
            config.write_text(
                local_config(
                    host,
                    settings.router_metrics_port,
                    [settings.triton_ports(r)[2] for r in range(settings.triton_replicas)],
                    settings.scrape_interval_seconds,
                ),
                encoding="utf-8",
            )
            address = f"{host}:{settings.prometheus_port}"
            command = [
                prometheus, f"--config.file={config}", f"--web.listen-address={address}",
                f"--storage.tsdb.path={settings.state_dir / 'prometheus'}",
                # Latency buckets carry trace ids when the router traces.
                "--enable-feature=exemplar-storage",
            ]  # fmt: skip
            start("prometheus", command, address, lambda: http_ok(f"http://{address}/-/ready"))
        else:
            say("prometheus is not installed: metrics stay on the router's and Triton's ports")
    except BaseException:
        for record in reversed(started):
            record.stop(settings.stop_grace_seconds)
        state.remove()
        raise
    return started


def _start_redis(settings: StackSettings, start: Callable[..., None]) -> str:
    """Start one Redis, or the nodes of a Redis Cluster joined into one; its URL."""
    redis_dir = settings.state_dir / "redis"
    redis_dir.mkdir(exist_ok=True)
    if not settings.redis_cluster:
        redis = RedisServer(redis_dir, settings.redis_port, settings.host)
        start("redis", redis.command(), redis.url, redis.ping)
        return redis.url
    # A node remembers its cluster in its node file; the data is gone, so forget it too.
    for stale in redis_dir.glob("nodes-*.conf"):
        stale.unlink()
    nodes = cluster_nodes(redis_dir, settings.redis_ports(), settings.host)
    for index, node in enumerate(nodes, start=1):
        start(f"redis-{index}", node.command(), node.url, node.ping)
    try:
        join_cluster(nodes, replicas=1, timeout_s=settings.ready_timeout_seconds)
    except RuntimeError as exc:
        raise StackError(str(exc)) from None
    return nodes[0].url


def fill_cache(
    settings: StackSettings, task: str, redis_url: str, say: Callable[[str], None]
) -> None:
    """Fill the cache with the teacher's answers to the task's cached sample queries."""
    samples = sample_queries(BuildLayout(settings.build_dir), task)
    queries = settings.state_dir / "queries" / f"{task}.jsonl"
    queries.parent.mkdir(parents=True, exist_ok=True)
    queries.write_text(
        "".join(json.dumps({"text": text}) + "\n" for text in samples.cached), encoding="utf-8"
    )
    command = _switchyard(
        "batch", "run", "--task", task, "--input", str(queries), "--build",
        str(settings.build_dir), "--redis-url", redis_url, "--no-progress",
        "--metrics-file", str(settings.state_dir / "metrics" / f"batch-{task}.prom"),
        "--redis-cluster" if settings.redis_cluster else "--no-redis-cluster",
    )  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StackError(f"the first batch run of {task} failed: {result.stderr.strip()}")
    say(f"cache filled for {task} with {len(samples.cached)} sample queries")


def down(settings: StackSettings, say: Callable[[str], None]) -> list[ProcessRecord]:
    """Stop every recorded server, last started first; returns those that were running."""
    state = StateFile(settings.state_dir)
    processes = state.load()
    stopped = [p for p in processes if p.alive()]
    for process in reversed(processes):
        process.stop(settings.stop_grace_seconds)
        if process in stopped:
            say(f"{process.name} stopped (pid {process.pid})")
    state.remove()
    return stopped
