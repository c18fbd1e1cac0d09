"""`switchyard up`, `demo` and `down`: the whole stack on one machine."""

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from services.cli._output import (
    ClientTlsCaFile,
    ClientTlsCertFile,
    ClientTlsKeyFile,
    ClientTlsServerName,
    fail,
    say,
    settings_error,
    tls_config,
)

if TYPE_CHECKING:
    from services.stack.stack import StackSettings

__all__ = ["demo", "down", "stack_settings", "up"]


def stack_settings(overrides: dict[str, Any]) -> "StackSettings":
    """The stack's settings with the options given; one error line if they are invalid."""
    from pydantic import ValidationError

    from services.stack.stack import StackSettings

    try:
        return StackSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise settings_error("stack settings", exc) from None


def up(
    build: Annotated[Path | None, typer.Option(help="Build folder [build].")] = None,
    state_dir: Annotated[
        Path | None, typer.Option(help="Pids, logs and configs [.switchyard].")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on [127.0.0.1].")] = None,
    router_port: Annotated[int | None, typer.Option(help="Router gRPC [50051].")] = None,
    router_metrics_port: Annotated[int | None, typer.Option(help="Router metrics [9464].")] = None,
    triton_http_port: Annotated[int | None, typer.Option(help="Triton HTTP [8000].")] = None,
    triton_grpc_port: Annotated[int | None, typer.Option(help="Triton gRPC [8001].")] = None,
    triton_metrics_port: Annotated[int | None, typer.Option(help="Triton metrics [8002].")] = None,
    triton_replicas: Annotated[
        int | None,
        typer.Option(help="Tritons the router spreads over [1]; each next one on ports +10."),
    ] = None,
    redis_port: Annotated[
        int | None, typer.Option(help="Redis [6379]; a cluster's nodes take it and the next 5.")
    ] = None,
    redis_cluster: Annotated[
        bool | None,
        typer.Option(
            "--redis-cluster/--no-redis-cluster",
            help="Run a Redis Cluster (3 masters, 3 replicas) instead of one Redis.",
        ),
    ] = None,
    prometheus_port: Annotated[int | None, typer.Option(help="Prometheus [9090].")] = None,
) -> None:
    """Start Redis, Triton, the router, a first batch run and Prometheus (if installed)."""
    from services.stack.errors import StackError
    from services.stack.stack import up as start_stack

    settings = stack_settings(
        {
            "build_dir": build,
            "state_dir": state_dir,
            "host": host,
            "router_port": router_port,
            "router_metrics_port": router_metrics_port,
            "triton_http_port": triton_http_port,
            "triton_grpc_port": triton_grpc_port,
            "triton_metrics_port": triton_metrics_port,
            "triton_replicas": triton_replicas,
            "redis_port": redis_port,
            "redis_cluster": redis_cluster,
            "prometheus_port": prometheus_port,
        }
    )
    console = Console(soft_wrap=True)
    try:
        processes = start_stack(settings, say)
    except StackError as exc:
        raise fail(str(exc)) from None
    table = Table(title="Switchyard is up")
    for column in ("service", "address", "pid", "log"):
        table.add_column(column)
    for process in processes:
        table.add_row(process.name, process.address, str(process.pid), process.log)
    console.print(table)
    console.print(
        f"metrics: router http://{settings.host}:{settings.router_metrics_port}/metrics, "
        f"triton http://{settings.host}:{settings.triton_metrics_port}/metrics. "
        "Try `switchyard demo`; stop with `switchyard down`.",
        highlight=False,
    )


def down(
    state_dir: Annotated[
        Path | None, typer.Option(help="State folder of `up` [.switchyard].")
    ] = None,
) -> None:
    """Stop everything `switchyard up` started."""
    from services.stack.errors import StackError
    from services.stack.stack import down as stop_stack

    try:
        stopped = stop_stack(stack_settings({"state_dir": state_dir}), say)
    except StackError as exc:
        raise fail(str(exc)) from None
    say("switchyard is down" if stopped else "nothing was running")


def demo(
    address: Annotated[str | None, typer.Option(help="Router address [from `up`].")] = None,
    state_dir: Annotated[
        Path | None, typer.Option(help="State folder of `up` [.switchyard].")
    ] = None,
    build: Annotated[
        Path | None, typer.Option(help="Build whose test splits give the texts [build].")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Deadline per request in seconds.")] = 5.0,
    tls_ca_file: ClientTlsCaFile = None,
    tls_cert_file: ClientTlsCertFile = None,
    tls_key_file: ClientTlsKeyFile = None,
    tls_server_name: ClientTlsServerName = None,
) -> None:
    """Send a few requests of each route to the router and print answers, routes and latencies."""
    from router.client import RequestError
    from services.contracts.build_layout import BuildLayout
    from services.stack.demo import run_demo
    from services.stack.errors import StackError
    from services.stack.processes import StateFile

    settings = stack_settings({"state_dir": state_dir, "build_dir": build})
    if address is None:
        try:
            recorded = StateFile(settings.state_dir).load()
        except StackError as exc:
            raise fail(str(exc)) from None
        routers = [p for p in recorded if p.name == "router"]
        if not routers or not routers[0].alive():
            raise fail("no running stack found; run `switchyard up` first, or pass --address")
        address = routers[0].address
    tls = tls_config(tls_ca_file, tls_cert_file, tls_key_file, tls_server_name)
    try:
        answers = run_demo(address, BuildLayout(settings.build_dir), timeout, tls)
    except (OSError, ValueError) as exc:
        raise fail(f"demo: {exc}") from None
    except RequestError as exc:
        raise fail(f"router at {address}: {exc}") from None
    table = Table(title=f"switchyard demo ({address})")
    for column in ("task", "text", "label", "score", "route", "server ms", "client ms"):
        table.add_column(column, justify="right" if "ms" in column or column == "score" else "left")
    for answer in answers:
        # One line per answer: an article's line breaks are shown as " / ".
        shown = re.sub(r"\s*\n\s*", " / ", answer.text)
        table.add_row(
            answer.task,
            shown if len(shown) <= 44 else shown[:41] + "...",
            answer.label,
            f"{answer.score:.3f}",
            answer.route,
            f"{answer.server_ms:.2f}",
            f"{answer.client_ms:.2f}",
        )
    Console(width=120).print(table)
