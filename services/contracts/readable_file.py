"""A settings type for a file the process reads later (a certificate, a key, a CA bundle).

Checked when the settings load, so a wrong path or a permission problem is one clear error at
startup rather than a failed TLS handshake on the first connection.
"""

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

__all__ = ["ReadableFile"]


def _readable(path: Path) -> Path:
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    return path


ReadableFile = Annotated[Path, AfterValidator(_readable)]
