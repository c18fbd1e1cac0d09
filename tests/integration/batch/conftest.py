"""Fixtures of the batch job's tests: real task texts, and one local Ray cluster."""

from collections.abc import Iterator

import pytest

from services.contracts.text import normalize_text
from services.pipeline.datasets import load_task
from services.pipeline.task_file import load_task_file, shipped_task_file
from services.processes.ray_head import RayHead


@pytest.fixture(scope="session")
def sentiment_texts() -> list[str]:
    """Real, distinct sentiment texts short enough for the test router's limit."""
    source = load_task_file(shipped_task_file("sentiment"), "quick").data
    texts = [e.text for e in load_task(source).examples if 20 <= len(e.text) <= 280]
    unique = list({normalize_text(text): text for text in texts}.values())
    return unique[:2000]


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    """One local Ray cluster (2 CPUs) for the session; drivers join it with `ray_head.env`."""
    with RayHead(tmp_path_factory.mktemp("ray")) as head:
        yield head
