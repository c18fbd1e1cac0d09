"""User-facing errors of the model pipeline: the CLI prints their message as one line."""

__all__ = ["PipelineError"]


class PipelineError(Exception):
    """A problem the user can fix (bad option, missing package, foreign output folder)."""
