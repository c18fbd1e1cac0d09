"""Each task's sample queries: texts of the build's own test split, which the student never
trained on. The stack's first batch run caches the first ones; the rest stay uncached, so a
demo or benchmark can ask for either route and know which one should answer."""

import json
from dataclasses import dataclass

from services.contracts.build_layout import BuildLayout

__all__ = ["CACHED_SAMPLES", "SampleQueries", "sample_queries"]

CACHED_SAMPLES = 200  # at most; never more than half the test split


@dataclass(frozen=True)
class SampleQueries:
    cached: list[str]
    unseen: list[str]


def sample_queries(layout: BuildLayout, task: str) -> SampleQueries:
    """The task's cached and uncached sample texts; OSError when the build lacks its split."""
    lines = layout.split_file(task, "test").read_text(encoding="utf-8").splitlines()
    texts = [str(json.loads(line)["text"]) for line in lines if line.strip()]
    cut = min(CACHED_SAMPLES, len(texts) // 2)
    return SampleQueries(cached=texts[:cut], unseen=texts[cut:])
