"""The `switchyard` command: one module per command group. Each parses its options, calls
the domain package that does the work, and presents the result; heavy imports (torch,
Triton, the router) happen inside the commands, so `switchyard --help` stays light."""

import typer

from services.cli import (
    batch,
    bench,
    models,
    prompts,
    quality,
    reliability,
    router,
    stack,
    triton,
)

__all__ = ["app"]

_PARTS, _STACK, _CHECKS = "Parts", "The whole stack on one machine", "Measure and break"

# No rich markup in help texts: "[the task]" is a default, not a tag.
app = typer.Typer(
    help="Switchyard: serve a distilled model on Triton behind a teacher cache.",
    rich_markup_mode=None,
)
app.add_typer(models.app, name="models", rich_help_panel=_PARTS)
app.add_typer(triton.app, name="triton", rich_help_panel=_PARTS)
app.add_typer(router.app, name="router", rich_help_panel=_PARTS)
app.add_typer(batch.app, name="batch", rich_help_panel=_PARTS)
app.add_typer(prompts.app, name="prompts", rich_help_panel=_PARTS)
app.add_typer(quality.app, name="quality", rich_help_panel=_CHECKS)
app.command("predict", rich_help_panel=_PARTS)(router.predict)
app.command("up", rich_help_panel=_STACK)(stack.up)
app.command("demo", rich_help_panel=_STACK)(stack.demo)
app.command("down", rich_help_panel=_STACK)(stack.down)
app.command("bench", rich_help_panel=_CHECKS)(bench.bench)
app.command("reliability", rich_help_panel=_CHECKS)(reliability.reliability)
