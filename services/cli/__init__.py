"""The `switchyard` command: one module per command group. Each parses its options, calls
the domain package that does the work, and presents the result; heavy imports (torch,
Triton, the router) happen inside the commands, so `switchyard --help` stays light."""

import typer

from services.cli import batch, bench, models, prompts, reliability, router, stack, triton

__all__ = ["app"]

app = typer.Typer(help="Switchyard: serve a distilled model on Triton behind a teacher cache.")
app.add_typer(models.app, name="models")
app.add_typer(triton.app, name="triton")
app.add_typer(batch.app, name="batch")
app.add_typer(router.app, name="router")
app.add_typer(prompts.app, name="prompts")
app.command("up")(stack.up)
app.command("down")(stack.down)
app.command("demo")(stack.demo)
app.command("bench")(bench.bench)
app.command("reliability")(reliability.reliability)
app.command("predict")(router.predict)
