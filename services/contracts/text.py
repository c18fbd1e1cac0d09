"""Text normalisation shared by the model pipeline, the router and the offline batch job.

Cache keys and deduplication both rely on this one function, so a change here changes
which requests hit the cache: bump the cache generation when it changes.
"""

import re
import unicodedata

__all__ = ["normalize_text"]

_WHITESPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Return the canonical form of `text`: Unicode NFKC, case folded, whitespace collapsed."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _WHITESPACE.sub(" ", folded).strip()
