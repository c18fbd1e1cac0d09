"""User-facing errors of the local stack: the CLI prints their message as one line."""

__all__ = ["StackError"]


class StackError(Exception):
    """A problem the user can fix (port in use, stack already running, unreadable state)."""
