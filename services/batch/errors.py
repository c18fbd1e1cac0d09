"""User-facing errors of the batch job: the CLI prints their message as one line."""

__all__ = ["BatchError"]


class BatchError(Exception):
    """A problem the user can fix (missing file, unknown task, unreachable Redis)."""
