"""`python -m services.cli`: the `switchyard` command, run by the stack and the tests."""

from services.cli import app

app(prog_name="switchyard")
