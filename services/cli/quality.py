"""`switchyard quality`: how much of the teacher's quality live traffic gets."""

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from services.cli._output import (
    BatchBuild,
    BatchRedisCluster,
    BatchRedisUrl,
    fail,
    settings_error,
)

__all__ = ["app"]

app = typer.Typer(
    help="Quality on live traffic: the student's sampled answers against the teacher."
)


@app.command("score")
def score(
    task: Annotated[str, typer.Option(help="Task whose teacher judges the sampled answers.")],
    namespace: Annotated[str, typer.Option(help="Cache namespace [the task].")] = "",
    build: BatchBuild = None,
    redis_url: BatchRedisUrl = None,
    redis_cluster: BatchRedisCluster = None,
    teacher_runtime: Annotated[
        str, typer.Option(help="onnx (onnxruntime) or torch: what runs the teacher.")
    ] = "onnx",
    metrics_file: Annotated[
        Path | None, typer.Option(help="Also write the result here (Prometheus textfile).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Have the teacher label the router's sample of live model-route answers, and store
    each student version's agreement with it (95% interval) for the routers to export."""
    from pydantic import ValidationError

    from services.batch.errors import BatchError

    overrides: dict[str, Any] = {
        "redis_url": redis_url,
        "redis_cluster": redis_cluster,
        "build_dir": build,
    }
    try:
        from services.batch.quality import score_samples, write_quality_metrics
        from services.batch.settings import BatchSettings, parse_teacher_runtime

        settings = BatchSettings(**{k: v for k, v in overrides.items() if v is not None})
        scoring = score_samples(
            settings, task, namespace or task, parse_teacher_runtime(teacher_runtime), progress
        )
    except BatchError as exc:
        raise fail(str(exc)) from None
    except ValidationError as exc:
        raise settings_error("quality settings", exc) from None
    record = scoring.record
    if metrics_file is not None:
        write_quality_metrics(metrics_file, record, namespace or task)
    console = Console()
    if not record.versions:
        console.print(f"no sampled answers of task {task!r} yet (the routers' quality_sample_rate)")
        return
    table = Table(title=f"student vs teacher ({record.teacher}) on live traffic: {task}")
    for column in ("model", "version", "sampled", "agreed", "agreement", "95% interval"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for version in record.versions:
        low, high = version.interval
        table.add_row(
            version.model, version.model_version, str(version.samples), str(version.agreed),
            f"{version.agreement:.1%}", f"{low:.1%} - {high:.1%}",
        )  # fmt: skip
    console.print(table)
    if scoring.malformed:
        console.print(f"{scoring.malformed} entries of the stream were not samples; skipped")
