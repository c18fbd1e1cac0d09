"""`switchyard router` (serve, check, tasks) and `switchyard predict`: the router and its
client."""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from services.cli._output import (
    ClientTlsCaFile,
    ClientTlsCertFile,
    ClientTlsKeyFile,
    ClientTlsServerName,
    fail,
    settings_error,
    tls_config,
    tls_option,
)

__all__ = ["app", "predict"]

app = typer.Typer(
    help="The gRPC router: cache route (Redis) or model route (Triton).", rich_markup_mode=None
)


@app.command("serve")
def serve(
    config: Annotated[Path, typer.Option(help="Router settings (YAML).")] = Path(
        "router/config.yaml"
    ),
    grpc_port: Annotated[int | None, typer.Option(help="gRPC port [from config].")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Metrics port [from config].")] = None,
) -> None:
    """Serve the router until SIGTERM or SIGINT."""
    import asyncio
    import logging

    from pydantic import ValidationError

    from router.server import serve as serve_router
    from router.settings import load_settings

    logging.basicConfig(
        level=logging.INFO,
        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s",
    )
    overrides = {"grpc_port": grpc_port, "metrics_port": metrics_port}
    try:
        settings = load_settings(config, **{k: v for k, v in overrides.items() if v is not None})
        asyncio.run(serve_router(settings))
    except ValidationError as exc:
        raise settings_error("router settings", exc) from None
    except (OSError, ValueError) as exc:
        raise fail(f"router: {exc}".replace("\n", "; ")) from None


@app.command("check")
def check(
    address: Annotated[str, typer.Option(help="Router address.")] = "127.0.0.1:50051",
    service: Annotated[str, typer.Option(help="Health service name; empty for overall.")] = "",
    timeout: Annotated[float, typer.Option(help="Deadline in seconds.")] = 2.0,
    tls_ca_file: Annotated[Path | None, tls_option("ca", "SWITCHYARD_CHECK_TLS_CA_FILE")] = None,
    tls_cert_file: Annotated[
        Path | None, tls_option("cert", "SWITCHYARD_CHECK_TLS_CERT_FILE")
    ] = None,
    tls_key_file: Annotated[Path | None, tls_option("key", "SWITCHYARD_CHECK_TLS_KEY_FILE")] = None,
    tls_server_name: Annotated[
        str | None, tls_option("server-name", "SWITCHYARD_CHECK_TLS_SERVER_NAME")
    ] = None,
) -> None:
    """Exit 0 when the router's gRPC health check says SERVING; 1 when it answers otherwise
    (naming the dependencies that are down); 2 when it does not answer."""
    from router.client import RequestError, RouterClient
    from router.contract import DEPENDENCIES

    tls = tls_config(tls_ca_file, tls_cert_file, tls_key_file, tls_server_name)
    try:
        with RouterClient(address, tls=tls, timeout_s=timeout, retries=0) as client:
            status = client.health(service)
            down = []
            if status != "SERVING" and not service:
                for dependency in DEPENDENCIES:
                    try:
                        if client.health(dependency) != "SERVING":
                            down.append(dependency)
                    except RequestError:
                        down.append(dependency)
    except (OSError, ValueError) as exc:
        raise fail(f"router check: {exc}") from None
    except RequestError as exc:
        raise fail(f"router at {address}: {exc}") from None
    if status != "SERVING":
        because = f" ({', '.join(down)} not serving)" if down else ""
        Console(stderr=True, soft_wrap=True).print(
            f"router at {address}: {status}{because}", highlight=False, markup=False
        )
        raise typer.Exit(code=1)
    print("SERVING")


@app.command("tasks")
def tasks(
    address: Annotated[str, typer.Option(help="Router address.")] = "127.0.0.1:50051",
    timeout: Annotated[float, typer.Option(help="Deadline in seconds.")] = 2.0,
    tls_ca_file: ClientTlsCaFile = None,
    tls_cert_file: ClientTlsCertFile = None,
    tls_key_file: ClientTlsKeyFile = None,
    tls_server_name: ClientTlsServerName = None,
) -> None:
    """List the router's tasks: the versions answering each (stable, a canary's candidate),
    its cache generation, and why a version it should serve does not."""
    from router.client import RequestError, RouterClient

    tls = tls_config(tls_ca_file, tls_cert_file, tls_key_file, tls_server_name)
    try:
        with RouterClient(address, tls=tls, timeout_s=timeout, retries=0) as client:
            infos = client.list_tasks()
    except (OSError, ValueError) as exc:
        raise fail(f"router tasks: {exc}") from None
    except RequestError as exc:
        raise fail(f"router at {address}: {exc}") from None
    table = Table(title=f"tasks of {address}")
    for column in ("task", "labels", "model", "candidate", "generation", "version problems"):
        table.add_column(column)
    for info in infos:
        candidate = ""
        if info.candidate_version:
            candidate = (
                f"v{info.candidate_version}: {info.canary_weight:.0%} canary, "
                f"{info.shadow_share:.0%} shadow"
            )
        table.add_row(
            info.task,
            str(len(info.labels)),
            f"{info.model} v{info.model_version}",
            candidate,
            info.cache_generation or "none",
            "\n".join(info.version_problems),
        )
    Console(width=140).print(table)


def predict(
    texts: Annotated[list[str], typer.Argument(help="Texts to classify.")],
    task: Annotated[str, typer.Option(help="Task name (`switchyard router tasks` lists them).")],
    policy: Annotated[str, typer.Option(help="auto, cache_only or model_only.")] = "auto",
    address: Annotated[str, typer.Option(help="Router address.")] = "127.0.0.1:50051",
    timeout: Annotated[float, typer.Option(help="Deadline in seconds.")] = 5.0,
    tls_ca_file: ClientTlsCaFile = None,
    tls_cert_file: ClientTlsCertFile = None,
    tls_key_file: ClientTlsKeyFile = None,
    tls_server_name: ClientTlsServerName = None,
) -> None:
    """Ask the router to classify TEXTS; prints each answer with its route and latency."""
    from router.client import Policy, RequestError, RouterClient

    policies = {policy.value: policy for policy in Policy}
    if policy not in policies:
        raise fail(f"unknown policy {policy!r}; use {', '.join(policies)}")
    tls = tls_config(tls_ca_file, tls_cert_file, tls_key_file, tls_server_name)
    try:
        with RouterClient(address, tls=tls, timeout_s=timeout) as client:
            answers = client.predict_batch(task, texts, policy=policies[policy])
    except (OSError, ValueError) as exc:
        raise fail(f"predict: {exc}") from None
    except RequestError as exc:
        raise fail(str(exc)) from None
    table = Table(title=f"{task} ({address})")
    for column in ("text", "label", "score", "route", "model", "server ms"):
        table.add_column(column)
    for text, answer in zip(texts, answers, strict=True):
        table.add_row(
            text if len(text) <= 40 else text[:37] + "...",
            answer.label,
            f"{answer.score:.3f}",
            answer.route.value,
            f"{answer.model} v{answer.model_version}",
            f"{answer.server_latency_ms:.2f}",
        )
    Console(width=110).print(table)
