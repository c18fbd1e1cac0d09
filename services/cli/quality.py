"""`switchyard quality`: how much of the teacher's quality live traffic gets."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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

if TYPE_CHECKING:
    from services.batch.quality import Scoring

__all__ = ["app"]

app = typer.Typer(
    help="Quality on live traffic: the student's sampled answers against the teacher.",
    rich_markup_mode=None,
)


Task = Annotated[str, typer.Option(help="Task whose teacher judges the sampled answers.")]
Namespace = Annotated[str, typer.Option(help="Cache namespace [the task].")]
TeacherRuntimeOption = Annotated[
    str, typer.Option(help="onnx (onnxruntime) or torch: what runs the teacher.")
]
Progress = Annotated[bool, typer.Option(help="Show a progress bar.")]


def _score(
    task: str,
    namespace: str,
    overrides: dict[str, Any],
    teacher_runtime: str,
    progress: bool,
    store: bool,
) -> "Scoring":
    """The teacher's verdict on the namespace's sample; one line and exit 2 on bad input."""
    from pydantic import ValidationError

    from services.batch.errors import BatchError

    try:
        from services.batch.quality import score_samples
        from services.batch.settings import BatchSettings, parse_teacher_runtime

        settings = BatchSettings(**{k: v for k, v in overrides.items() if v is not None})
        runtime = parse_teacher_runtime(teacher_runtime)
        return score_samples(settings, task, namespace or task, runtime, progress, store)
    except BatchError as exc:
        raise fail(str(exc)) from None
    except ValidationError as exc:
        raise settings_error("quality settings", exc) from None


@app.command("score")
def score(
    task: Task,
    namespace: Namespace = "",
    build: BatchBuild = None,
    redis_url: BatchRedisUrl = None,
    redis_cluster: BatchRedisCluster = None,
    teacher_runtime: TeacherRuntimeOption = "onnx",
    metrics_file: Annotated[
        Path | None, typer.Option(help="Also write the result here (Prometheus textfile).")
    ] = None,
    progress: Progress = True,
) -> None:
    """Have the teacher label the router's sample of live model-route answers, and store
    each student version's agreement with it (95% interval) for the routers to export."""
    from services.batch.quality import write_quality_metrics

    overrides = {"redis_url": redis_url, "redis_cluster": redis_cluster, "build_dir": build}
    scoring = _score(task, namespace, overrides, teacher_runtime, progress, store=True)
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


@app.command("calibrate")
def calibrate(
    task: Task,
    namespace: Namespace = "",
    build: BatchBuild = None,
    redis_url: BatchRedisUrl = None,
    redis_cluster: BatchRedisCluster = None,
    teacher_runtime: TeacherRuntimeOption = "onnx",
    thresholds: Annotated[
        str | None, typer.Option(help="Thresholds to compare, e.g. 0.5,0.6,0.7 [0.3 to 0.95].")
    ] = None,
    target_error: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Error rate the answers above the threshold may have."),
    ] = 0.05,
    progress: Progress = True,
) -> None:
    """For each confidence threshold: the share of model answers it queues for the next
    offline run, and the student's error rate (against the teacher) below and above it."""
    from services.batch.calibration import (
        DEFAULT_THRESHOLDS,
        calibrate,
        lowest_threshold,
        parse_thresholds,
    )
    from services.batch.errors import BatchError

    try:
        compared = DEFAULT_THRESHOLDS if thresholds is None else parse_thresholds(thresholds)
    except BatchError as exc:
        raise fail(str(exc)) from None
    overrides = {"redis_url": redis_url, "redis_cluster": redis_cluster, "build_dir": build}
    scoring = _score(task, namespace, overrides, teacher_runtime, progress, store=False)
    console = Console()
    if not scoring.scored:
        console.print(f"no sampled answers of task {task!r} yet (the routers' quality_sample_rate)")
        return
    rows = calibrate(scoring.scored, compared)
    versions = ", ".join(f"{v.model} v{v.model_version}" for v in scoring.record.versions)
    table = Table(
        title=f"confidence thresholds for {task}: {len(scoring.scored)} sampled answers of "
        f"{versions}, judged by {scoring.record.teacher}"
    )
    for column in ("threshold", "queued", "error below", "error above", "above, 95% high"):
        table.add_column(column, justify="right")

    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    for row in rows:
        table.add_row(
            f"{row.threshold:.2f}", f"{row.queued_share:.1%}", rate(row.error_below),
            rate(row.error_above), rate(row.error_above_high if row.kept else None),
        )  # fmt: skip
    console.print(table)
    best = lowest_threshold(rows, target_error)
    if best is None:
        console.print(
            f"no threshold keeps the unqueued answers' error at most {target_error:.1%} with "
            "95% confidence on this sample: sample more, or queue more"
        )
    else:
        console.print(
            f"lowest threshold whose unqueued answers err at most {target_error:.1%} (95% "
            f"high): {best.threshold:.2f}, queueing {best.queued_share:.1%} of model answers"
        )
