"""`switchyard batch`: the offline job that labels texts with the teacher into a new cache
generation, then flips to it."""

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
    help="The offline batch job: teacher predictions into the Redis cache.", rich_markup_mode=None
)


def _seconds(value: str) -> int:
    """'3600', '90m', '12h' or '8d' as seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (value[:-1], value[-1]) if value[-1:] in units else (value, "s")
    if not number.isdigit() or int(number) == 0:
        raise typer.BadParameter(f"{value!r} is not a duration such as 3600, 90m, 12h or 8d")
    return int(number) * units[unit]


def _share(part: int, whole: int) -> str:
    return f"{part} ({part / whole:.1%})" if whole else "-"


@app.command("run")
def run(
    task: Annotated[str, typer.Option(help="Task whose teacher labels the texts.")],
    inputs: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            help="JSONL, CSV, text or Parquet file, folder, glob or fsspec URL (repeatable).",
        ),
    ] = None,
    include_misses: Annotated[
        bool, typer.Option(help="Also label the texts the router queued as misses.")
    ] = False,
    top_misses: Annotated[
        int,
        typer.Option(min=0, help="Also label the N most frequent uncached texts of the last week."),
    ] = 0,
    score_samples: Annotated[
        bool,
        typer.Option(
            help="After the flip, score the routers' sampled model answers with the teacher "
            "(as `switchyard quality score`)."
        ),
    ] = False,
    shard: Annotated[
        str, typer.Option(help="This worker's share i/n of the input (Kubernetes Indexed Job).")
    ] = "0/1",
    ttl: Annotated[
        str | None, typer.Option(help="Lifetime of the generation's keys: 3600, 90m, 12h, 8d.")
    ] = None,
    build: BatchBuild = None,
    redis_url: BatchRedisUrl = None,
    redis_cluster: BatchRedisCluster = None,
    namespace: Annotated[str, typer.Option(help="Cache namespace [the task].")] = "",
    input_format: Annotated[
        str | None, typer.Option("--format", help="jsonl, csv, text or parquet [from the suffix].")
    ] = None,
    text_field: Annotated[str, typer.Option(help="JSONL field or CSV/Parquet column.")] = "text",
    batch_size: Annotated[int | None, typer.Option(help="Texts per teacher pass [32].")] = None,
    write_every: Annotated[
        int | None, typer.Option(help="Texts labelled between writes [512].")
    ] = None,
    metrics_file: Annotated[
        Path | None, typer.Option(help="Write run metrics here (Prometheus textfile format).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    teacher: Annotated[
        str, typer.Option(help="model (the build's fine-tuned teacher) or llm-fewshot.")
    ] = "model",
    shots: Annotated[int, typer.Option(help="Examples per prompt (llm-fewshot).")] = 3,
    selection: Annotated[
        str, typer.Option(help="How examples are chosen: nearest or random (llm-fewshot).")
    ] = "nearest",
    seed: Annotated[int, typer.Option(help="Seed of the example draw (llm-fewshot).")] = 0,
    teacher_runtime: Annotated[
        str, typer.Option(help="onnx (onnxruntime) or torch: what runs the fine-tuned teacher.")
    ] = "onnx",
    engine: Annotated[
        str, typer.Option(help="in-process, or ray (Ray Data on a local or remote Ray).")
    ] = "in-process",
    ray_address: Annotated[
        str | None,
        typer.Option(help="Ray cluster to run on (--engine ray) [RAY_ADDRESS, else a local Ray]."),
    ] = None,
    ray_workers: Annotated[
        int | None,
        typer.Option(min=1, help="Most teacher actors (--engine ray) [one per GPU, else CPU]."),
    ] = None,
) -> None:
    """Label texts with the task's teacher into a new cache generation, then flip to it."""
    import time

    from pydantic import ValidationError

    from services.batch.errors import BatchError
    from services.batch.inputs import parse_format

    overrides: dict[str, Any] = {
        "redis_url": redis_url,
        "redis_cluster": redis_cluster,
        "build_dir": build,
        "ttl_seconds": None if ttl is None else _seconds(ttl),
        "batch_size": batch_size,
        "write_every": write_every,
    }
    try:
        # Torch and the teacher load only here, so the other commands stay light.
        from services.batch.job import run_batch
        from services.batch.metrics import write_metrics
        from services.batch.settings import (
            BatchOptions,
            BatchSettings,
            Shard,
            parse_engine,
            parse_teacher_runtime,
        )

        if engine != "ray" and (ray_address is not None or ray_workers is not None):
            raise BatchError("--ray-address and --ray-workers go with --engine ray")

        settings = BatchSettings(**{k: v for k, v in overrides.items() if v is not None})
        options = BatchOptions(
            task=task,
            inputs=inputs or [],
            include_misses=include_misses,
            top_misses=top_misses,
            score_samples=score_samples,
            shard=Shard.parse(shard),
            namespace=namespace,
            input_format=None if input_format is None else parse_format(input_format),
            text_field=text_field,
            show_progress=progress,
            teacher=teacher,
            shots=shots,
            selection=selection,
            seed=seed,
            teacher_runtime=parse_teacher_runtime(teacher_runtime),
            engine=parse_engine(engine),
            ray_address=ray_address,
            ray_workers=ray_workers,
        )
        summary = run_batch(options, settings)
    except BatchError as exc:
        raise fail(str(exc)) from None
    except ValidationError as exc:
        raise settings_error("batch settings", exc) from None
    if metrics_file is not None:
        write_metrics(metrics_file, summary, time.time())
    table = Table(title=f"batch run: {task} -> {summary.namespace}, shard {shard}")
    table.add_column("")
    table.add_column("", justify="right")
    rows = {
        "engine": summary.engine,
        "rows read (files and misses)": summary.rows_read,
        "input bytes read": summary.bytes_read,
        "of them misses": summary.misses_read,
        "of them top misses": summary.top_misses_read,
        "skipped": sum(summary.skipped.values()),
        "duplicates": summary.duplicates,
        "unique texts": summary.unique,
        "in this shard": summary.in_shard,
        "already written (resumed)": summary.resumed,
        "written": summary.written,
        "teacher rows/s": f"{summary.rows_per_second:.1f}",
        "generation": summary.generation or "-",
        "rows in generation": summary.generation_rows,
        "misses removed": summary.misses_removed,
        "last week's misses (routers' count)": summary.week_misses,
        "  that this generation answers": _share(summary.week_misses_answered, summary.week_misses),
        "seconds": f"{summary.seconds:.1f}",
    }
    for reason, count in summary.skipped.items():
        rows[f"  skipped: {reason}"] = count
    for name, value in rows.items():
        table.add_row(name, str(value))
    console = Console(width=100)
    console.print(table)
    console.print(f"outcome: {summary.outcome}", highlight=False)
    if summary.quality is not None:
        for version in summary.quality.versions:
            low, high = version.interval
            console.print(
                f"student {version.model} v{version.model_version} agrees with the teacher on "
                f"{version.agreed} of {version.samples} sampled answers ({version.agreement:.1%}, "
                f"95% interval {low:.1%} - {high:.1%})",
                highlight=False,
            )
        if not summary.quality.versions:
            console.print("no sampled model answers to score yet", highlight=False)
