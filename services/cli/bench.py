"""`switchyard bench`: every route of the running stack against its floor and alternatives."""

from pathlib import Path
from typing import Annotated

import typer

from services.cli._output import fail, say
from services.cli.stack import stack_settings

__all__ = ["bench"]


def bench(
    quick: Annotated[bool, typer.Option(help="Short phases (under 2 minutes in all).")] = False,
    out: Annotated[Path, typer.Option(help="Results folder.")] = Path("bench-results"),
    state_dir: Annotated[
        Path | None, typer.Option(help="State folder of `up` [.switchyard].")
    ] = None,
    build: Annotated[Path | None, typer.Option(help="Build folder [build].")] = None,
    task: Annotated[str | None, typer.Option(help="Task to measure [the build's first].")] = None,
    report: Annotated[
        Path | None, typer.Option(help="Also write the tables here (BENCHMARKS.md).")
    ] = None,
) -> None:
    """Measure every route of the running stack against its floor and its alternatives."""
    from bench.stack_bench import BenchOptions, run_bench
    from services.contracts.build_layout import BuildLayout
    from services.stack.errors import StackError

    settings = stack_settings({"state_dir": state_dir, "build_dir": build})
    try:
        built = BuildLayout(settings.build_dir).read_report()
    except ValueError as exc:
        raise fail(str(exc)) from None
    if built is None or not built.tasks:
        raise fail(f"no finished build at {settings.build_dir}; run `switchyard models build`")
    if task is None:
        task = sorted(built.tasks)[0]
    elif task not in built.tasks:
        raise fail(f"task {task!r} is not in the build (tasks: {', '.join(sorted(built.tasks))})")
    options = BenchOptions(
        state_dir=settings.state_dir,
        build_dir=settings.build_dir,
        task=task,
        out_dir=out,
        quick=quick,
        report=report,
    )
    try:
        run_bench(options, say)
    except (RuntimeError, StackError) as exc:
        raise fail(str(exc)) from None
    say((out / "results.md").read_text(encoding="utf-8"))
    say(f"results: {out / 'results.json'}, charts in {out}")
