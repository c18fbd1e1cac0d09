"""One converted copy of the packaged LLM for the whole session (the conversion takes ~40 s)."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def llm_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """SWITCHYARD_PROMPTS_CACHE_DIR for every CLI call of the session's prompt tests."""
    cache = tmp_path_factory.mktemp("llm")
    previous = os.environ.get("SWITCHYARD_PROMPTS_CACHE_DIR")
    os.environ["SWITCHYARD_PROMPTS_CACHE_DIR"] = str(cache)
    try:
        yield cache
    finally:
        if previous is None:
            os.environ.pop("SWITCHYARD_PROMPTS_CACHE_DIR", None)
        else:
            os.environ["SWITCHYARD_PROMPTS_CACHE_DIR"] = previous
