"""User-facing errors of prompting: the CLI prints their message as one line."""

__all__ = ["PromptError"]


class PromptError(Exception):
    """A problem the user can fix: unknown task, too many shots, a prompt over the context."""
