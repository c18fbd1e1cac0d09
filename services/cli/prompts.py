"""`switchyard prompts`: zero-, one- and few-shot prompting of the packaged LLM, evaluated."""

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from services.cli._output import fail, percent, say, settings_error

__all__ = ["app"]

app = typer.Typer(
    help="Zero-, one- and few-shot prompting of a packaged LLM.", rich_markup_mode=None
)


@app.command("eval")
def evaluate(
    task: Annotated[str, typer.Option(help="Task whose test split is sampled.")],
    shots: Annotated[str, typer.Option(help="Shot counts, comma separated.")] = "0,1,3,5",
    n: Annotated[int, typer.Option(help="Test texts in the sample.")] = 40,
    seed: Annotated[int, typer.Option(help="Seed of the sample and of the example draws.")] = 0,
    selection: Annotated[str, typer.Option(help="random or nearest (by embedding).")] = "random",
    prompt_format: Annotated[
        str, typer.Option("--format", help="plain (input: label lines) or chat.")
    ] = "plain",
    max_chars: Annotated[
        int | None, typer.Option(help="Clip each text to this many characters [300].")
    ] = None,
    build: Annotated[Path, typer.Option(help="Build folder with the student.")] = Path("build"),
    out: Annotated[Path | None, typer.Option(help="Write the results as JSON here.")] = None,
) -> None:
    """Accuracy and macro-F1 of the prompted LLM per shot count, beside the student."""
    import json

    from pydantic import ValidationError

    from services.prompts.errors import PromptError
    from services.prompts.evaluate import PromptEvalOptions, PromptSettings, evaluate_prompts
    from services.prompts.selection import parse_selection
    from services.prompts.templates import parse_format

    try:
        counts = [int(count) for count in shots.split(",")]
    except ValueError:
        raise fail(f"--shots must be counts separated by commas, got {shots!r}") from None
    try:
        options = PromptEvalOptions(
            task,
            counts,
            n,
            seed,
            parse_selection(selection),
            parse_format(prompt_format),
            build,
        )
        overrides: dict[str, Any] = {} if max_chars is None else {"max_chars": max_chars}
        settings = PromptSettings(**overrides)
        report = evaluate_prompts(options, settings, say)
    except PromptError as exc:
        raise fail(str(exc)) from None
    except ValidationError as exc:
        raise settings_error("prompt settings", exc) from None
    table = Table(
        title=f"{task}: {report['n']} test texts, seed {seed}, {selection} examples, "
        f"{prompt_format} prompts (template {report['template_hash']})"
    )
    for column in ("model", "accuracy", "macro-F1", "prompt tokens (mean/max)", "s/prediction"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in report["rows"]:
        tokens = (
            f"{row['prompt_tokens_mean']:.0f} / {row['prompt_tokens_max']}"
            if row["prompt_tokens_max"] is not None
            else "-"
        )
        table.add_row(
            row["model"],
            percent(row["accuracy"]),
            f"{row['macro_f1']:.3f}",
            tokens,
            f"{row['seconds_per_prediction']:.3f}",
        )
    Console(width=130).print(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2), encoding="utf-8")
        say(f"results: {out}")
