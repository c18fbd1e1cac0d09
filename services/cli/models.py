"""`switchyard models`: build the teacher and student of each task, print a build's report, and
roll versions out (canary, promote, rollback)."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from services.cli._output import fail, percent, say, settings_error
from services.contracts.build_layout import DEFAULT_SEED

if TYPE_CHECKING:
    from collections.abc import Callable

    from services.contracts.build_report import BuildReport
    from services.contracts.rollout_schema import Rollout
    from services.pipeline.rollout import Rollouts

__all__ = ["app", "report_tables"]

app = typer.Typer(
    help="Build, evaluate and export the teacher and student models; roll versions out.",
    rich_markup_mode=None,
)


def report_tables(report: "BuildReport") -> list[Table]:
    """The evaluation table (one row per model) and the checks table (one row per task)."""
    models = Table(title=f"Switchyard models, {report.profile} profile (test split)")
    for column in ("task", "model", "params", "size", "accuracy", "macro F1", "agrees", "b1 ms"):
        models.add_column(column, justify="left" if column in {"task", "model"} else "right")
    checks = Table(title="Export and responsible-use checks")
    for column in ("task", "trainable", "onnx |Δlogit|", "int8=fp32", "served", "bias gap s/t"):
        checks.add_column(column, justify="left" if column == "task" else "right")
    for task, result in report.tasks.items():
        teacher, student, onnx = result.teacher, result.student, result.onnx
        rows = [
            (
                f"teacher {teacher.base_model}+LoRA",
                f"{teacher.params / 1e6:.1f}M",
                "",
                teacher.test_accuracy,
                teacher.test_macro_f1,
                "",
                teacher.latency_ms_batch1,
            ),
            (
                "student L3 torch",
                f"{student.params / 1e6:.1f}M",
                "",
                student.test_accuracy,
                student.test_macro_f1,
                percent(student.agreement_with_teacher),
                student.latency_ms_batch1,
            ),
            (
                "student ONNX fp32",
                "",
                f"{onnx.size_bytes_fp32 / 2**20:.1f} MiB",
                onnx.fp32_test_accuracy,
                None,
                "",
                onnx.fp32_latency_ms_batch1,
            ),
            (
                "student ONNX int8",
                "",
                f"{onnx.size_bytes_int8 / 2**20:.1f} MiB",
                onnx.int8_test_accuracy,
                onnx.int8_test_macro_f1,
                "",
                onnx.int8_latency_ms_batch1,
            ),
        ]
        for index, (name, params, size, accuracy, f1, agrees, latency) in enumerate(rows):
            models.add_row(
                task if index == 0 else "",
                name,
                params,
                size,
                percent(accuracy),
                "" if f1 is None else percent(f1),
                agrees,
                f"{latency:.2f}",
                end_section=index == len(rows) - 1,
            )
        bias = result.bias
        checks.add_row(
            task,
            percent(teacher.trainable_fraction),
            f"{onnx.max_abs_logit_diff:.1e}",
            percent(onnx.int8_agreement_with_fp32),
            result.served_precision,
            "n/a" if bias is None else f"{percent(bias.max_gap)} / {percent(bias.teacher_max_gap)}",
        )
    return [models, checks]


def _print_report(report: "BuildReport") -> None:
    console = Console()
    if not console.is_terminal:
        console = Console(width=110)
    for table in report_tables(report):
        console.print(table)


@app.command("build")
def build(
    out: Annotated[Path, typer.Option(help="Output folder for the build and model repository.")],
    task_files: Annotated[
        list[Path] | None,
        typer.Option("--task-file", help="A task file (YAML) to build; repeatable."),
    ] = None,
    tasks: Annotated[
        str | None,
        typer.Option(help="Comma-separated shipped tasks [all shipped, without --task-file]."),
    ] = None,
    profile: Annotated[str, typer.Option(help="Budget preset: quick or full.")] = "quick",
    seed: Annotated[
        int, typer.Option(help="Seed for splits, sampling and training.")
    ] = DEFAULT_SEED,
    precision: Annotated[
        str | None,
        typer.Option(help="Served precision for every task: auto, int8, fp32 [task file]."),
    ] = None,
    max_train: Annotated[int | None, typer.Option(help="Override: training examples.")] = None,
    max_eval: Annotated[int | None, typer.Option(help="Override: validation/test cap.")] = None,
    teacher_steps: Annotated[int | None, typer.Option(help="Override: teacher steps.")] = None,
    student_steps: Annotated[int | None, typer.Option(help="Override: student steps.")] = None,
) -> None:
    """Check each task's data, build its teacher and student, publish OUT/model_repository.

    Tasks already in OUT that are not named again stay as they were."""
    from services.pipeline.errors import PipelineError
    from services.pipeline.task_file import parse_precision, shipped_task_file, shipped_tasks

    overrides: dict[str, dict[str, int]] = {"data": {}, "teacher": {}, "student": {}}
    for section, key, value in (
        ("data", "max_train", max_train),
        ("data", "max_validation", max_eval),
        ("data", "max_test", max_eval),
        ("teacher", "steps", teacher_steps),
        ("student", "steps", student_steps),
    ):
        if value is not None:
            overrides[section][key] = value
    try:
        requested = None if precision is None else parse_precision(precision)
        names = [] if tasks is None else [name.strip() for name in tasks.split(",")]
        if tasks is None and not task_files:
            names = shipped_tasks()
        files = [shipped_task_file(name) for name in names if name] + list(task_files or [])
        # Torch and the training stack load only here, so serving commands stay light.
        from services.pipeline.build import BuildOptions, build_models

        report = build_models(BuildOptions(out, profile, files, seed, requested, overrides))
    except PipelineError as exc:
        raise fail(str(exc)) from None
    _print_report(report)
    Console().print(f"report: {out / 'report.json'}   model repository: {out / 'model_repository'}")


@app.command("report")
def report(
    out: Annotated[Path, typer.Option(help="Build folder holding report.json.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON.")] = False,
) -> None:
    """Print the evaluation table of an earlier build."""
    from services.contracts.build_layout import BuildLayout

    layout = BuildLayout(out)
    if as_json and layout.report_file.is_file():
        # The file as written, whichever version wrote it.
        print(layout.report_file.read_text(encoding="utf-8"), end="")
        return
    try:
        built = layout.read_report()
    except ValueError as exc:
        raise fail(str(exc)) from None
    if built is None:
        raise fail(
            f"no report at {layout.report_file}; run `switchyard models build --out {out}` first"
        )
    _print_report(built)


_REPOSITORY_HELP = "Model repository, to refuse versions it does not hold (when it exists)."
_DEFAULT_REPOSITORY = Path("build/model_repository")


def _rollouts(repository: Path, redis_url: str | None) -> "Rollouts":
    from pydantic import ValidationError

    from services.pipeline.rollout import RolloutError, Rollouts, RolloutSettings

    overrides: dict[str, Any] = {} if redis_url is None else {"redis_url": redis_url}
    try:
        settings = RolloutSettings(**overrides)
        return Rollouts.connect(settings, repository)
    except ValidationError as exc:
        raise settings_error("rollout settings", exc) from None
    except RolloutError as exc:
        raise fail(str(exc)) from None


def _change_rollout(
    task: str, repository: Path, redis_url: str | None, change: "Callable[[Rollouts], Rollout]"
) -> None:
    from services.pipeline.rollout import RolloutError

    rollouts = _rollouts(repository, redis_url)
    try:
        record = change(rollouts)
    except RolloutError as exc:
        raise fail(str(exc)) from None
    finally:
        rollouts.close()
    say(f"{task}: {_describe_rollout(record)}; every router follows within a second or two")


def _describe_rollout(record: "Rollout") -> str:
    text = f"stable version {record.stable} (pinned)" if record.stable else "the newest version"
    if record.candidate:
        text += (
            f", candidate version {record.candidate} answering {record.weight:.0%} of the "
            f"texts and shadowing {record.shadow:.0%} of the rest"
        )
    if record.previous:
        text += f"; rollback returns to version {record.previous}"
    return text


_RedisUrl = Annotated[
    str | None, typer.Option(help="Redis URL; prefer SWITCHYARD_ROLLOUT_REDIS_URL.")
]
_Repository = Annotated[Path, typer.Option(help=_REPOSITORY_HELP)]


@app.command("canary")
def canary(
    task: Annotated[str, typer.Argument(help="The task's model in the repository.")],
    version: Annotated[str, typer.Argument(help="The candidate version.")],
    weight: Annotated[
        float, typer.Option(help="Share of texts the candidate answers, 0 to 1.")
    ] = 0.05,
    shadow: Annotated[
        float,
        typer.Option(help="Share of the other texts also asked of the candidate, 0 to 1."),
    ] = 0.0,
    model_repository: _Repository = _DEFAULT_REPOSITORY,
    redis_url: _RedisUrl = None,
) -> None:
    """Serve VERSION beside the stable version to a share of the texts (by a stable hash of
    each text), and optionally shadow it on the rest; `rollback` ends it, `promote` adopts it."""
    _change_rollout(
        task, model_repository, redis_url, lambda r: r.canary(task, version, weight, shadow)
    )


@app.command("promote")
def promote(
    task: Annotated[str, typer.Argument(help="The task's model in the repository.")],
    version: Annotated[
        str, typer.Argument(help="The version to serve, or `latest` to follow the newest.")
    ],
    model_repository: _Repository = _DEFAULT_REPOSITORY,
    redis_url: _RedisUrl = None,
) -> None:
    """Serve VERSION as the stable version on every router (a canary ends)."""
    _change_rollout(task, model_repository, redis_url, lambda r: r.promote(task, version))


@app.command("rollback")
def rollback(
    task: Annotated[str, typer.Argument(help="The task's model in the repository.")],
    model_repository: _Repository = _DEFAULT_REPOSITORY,
    redis_url: _RedisUrl = None,
) -> None:
    """End a canary; without one, serve the version from before the last promote (or the
    one before the served version)."""
    _change_rollout(task, model_repository, redis_url, lambda r: r.rollback(task))


@app.command("rollout")
def rollout(
    tasks: Annotated[
        list[str] | None,
        typer.Argument(help="Models to show (default: every model of the repository)."),
    ] = None,
    model_repository: _Repository = _DEFAULT_REPOSITORY,
    redis_url: _RedisUrl = None,
) -> None:
    """Print each model's rollout record: which versions every router serves."""
    from services.contracts.model_repository import model_names
    from services.pipeline.rollout import RolloutError

    names = list(tasks or [])
    if not names and model_repository.is_dir():
        names = model_names(model_repository)
    if not names:
        raise fail(f"name a task: {model_repository} holds no model")
    rollouts = _rollouts(model_repository, redis_url)
    try:
        for name in names:
            say(f"{name}: {_describe_rollout(rollouts.read(name))}")
    except RolloutError as exc:
        raise fail(str(exc)) from None
    finally:
        rollouts.close()
