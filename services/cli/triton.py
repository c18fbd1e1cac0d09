"""`switchyard triton`: serve a model repository with the Triton Inference Server of the
`nvidia-pytriton` wheel."""

from pathlib import Path
from typing import Annotated, Any

import typer

from services.cli._output import fail, say, settings_error

__all__ = ["app"]

app = typer.Typer(
    help="Serve the model repository with NVIDIA Triton Inference Server.", rich_markup_mode=None
)


@app.command("serve")
def serve(
    repository: Annotated[Path, typer.Option(help="Model repository (OUT/model_repository).")],
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    grpc_port: Annotated[int | None, typer.Option(help="gRPC port [8001].")] = None,
    http_port: Annotated[int | None, typer.Option(help="HTTP port [8000].")] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Prometheus metrics port [8002].")
    ] = None,
    cache_size: Annotated[int | None, typer.Option(help="Response cache bytes; 0 = off.")] = None,
    threads: Annotated[
        int | None, typer.Option(help="onnxruntime threads per model instance [from config].")
    ] = None,
    ready_timeout: Annotated[float | None, typer.Option(help="Seconds to wait for ready.")] = None,
    previous_version_seconds: Annotated[
        float | None,
        typer.Option(
            help="Seconds a replaced version keeps serving beside its successor (default: "
            "until the next one, so a rollback or a canary can use it)."
        ),
    ] = None,
) -> None:
    """Run Triton until SIGTERM or SIGINT, picking up new model versions as they appear."""
    import signal
    import threading

    from pydantic import ValidationError

    from services.triton.server import TritonError, TritonServer, TritonSettings

    overrides: dict[str, Any] = {
        "host": host,
        "grpc_port": grpc_port,
        "http_port": http_port,
        "metrics_port": metrics_port,
        "cache_size": cache_size,
        "onnx_threads": threads,
        "ready_timeout": ready_timeout,
        "previous_version_seconds": previous_version_seconds,
    }
    try:
        settings = TritonSettings(
            repository=repository,
            **{key: value for key, value in overrides.items() if value is not None},
        )
    except ValidationError as exc:
        raise settings_error("triton settings", exc) from None
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    server = TritonServer(settings)
    try:
        report = server.start()
        for model, reason in report.rejected.items():
            say(f"not serving {model}: {reason}")
        say(
            f"triton ready (pid {server.pid}): grpc {settings.host}:{settings.grpc_port}, "
            f"http {settings.host}:{settings.http_port}, "
            f"metrics http://{settings.host}:{settings.metrics_port}/metrics; "
            f"serving {', '.join(report.added)}"
        )
        server.serve(stopping, say)
    except TritonError as exc:
        raise fail(str(exc)) from None
    finally:
        server.stop()
    say("triton stopped")
