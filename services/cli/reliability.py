"""`switchyard reliability`: faults, bad input and a soak against a private testbed."""

from pathlib import Path
from typing import Annotated

import typer

from services.cli._output import fail, say

__all__ = ["reliability"]


def reliability(
    build: Annotated[Path, typer.Option(help="Build folder with the model repository.")] = Path(
        "build"
    ),
    out: Annotated[Path, typer.Option(help="Results folder.")] = Path("reliability-results"),
    soak_seconds: Annotated[
        float, typer.Option(help="Also soak at 80% of capacity this long; 0 skips the soak.")
    ] = 0.0,
    scenario: Annotated[
        list[str] | None, typer.Option(help="Run only these scenarios (repeatable).")
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="Also write the report here (RELIABILITY.md).")
    ] = None,
) -> None:
    """Break Redis, Triton and the router under load, send bad input, soak; report each."""
    from services.reliability.run import ReliabilityOptions, run_reliability

    options = ReliabilityOptions(build, out, soak_seconds, tuple(scenario or ()), report)
    try:
        results = run_reliability(options, say)
    except RuntimeError as exc:
        raise fail(str(exc)) from None
    say((out / "results.md").read_text(encoding="utf-8"))
    if not all(result.passed for result in results):
        raise typer.Exit(1)
