from collections import Counter

import pytest

from services.contracts.text import normalize_text
from services.pipeline.datasets import (
    Example,
    LoadedTask,
    deduplicate,
    load_task,
    split_examples,
    stratified_sample,
)
from services.pipeline.errors import PipelineError
from services.pipeline.task_file import load_task_file, shipped_task_file


def _shipped(task: str) -> LoadedTask:
    return load_task(load_task_file(shipped_task_file(task), "quick").data)


def _label_shares(examples: list[Example]) -> dict[int, float]:
    counts = Counter(example.label for example in examples)
    return {label: count / len(examples) for label, count in counts.items()}


@pytest.fixture(scope="module")
def topic() -> list[Example]:
    return _shipped("topic").examples


def test_topic_has_five_labels_from_bbc_news() -> None:
    loaded = _shipped("topic")
    assert loaded.labels == ["business", "entertainment", "politics", "sports", "tech"]
    assert len(loaded.examples) > 2000
    assert loaded.rows_read == 2225


def test_sentiment_is_deduplicated_after_normalisation() -> None:
    loaded = _shipped("sentiment")
    assert loaded.labels == ["negative", "neutral", "positive"]
    keys = [normalize_text(example.text) for example in loaded.examples]
    assert len(keys) == len(set(keys))
    assert loaded.duplicates_dropped > 0


def test_deduplicate_drops_case_variants_and_conflicts() -> None:
    rows = [
        ("Good day", "pos"),
        ("good  DAY", "pos"),
        ("Bad", "neg"),
        ("bad", "pos"),
        ("Ok", "neg"),
    ]
    loaded = deduplicate(["neg", "pos"], rows)
    assert [(e.text, e.label) for e in loaded.examples] == [("Good day", 1), ("Ok", 0)]
    assert loaded.conflicts_dropped == 1
    assert loaded.duplicates_dropped == 2


def test_unknown_task_is_a_clear_error() -> None:
    with pytest.raises(
        PipelineError, match="unknown task 'weather'; shipped tasks: sentiment, topic"
    ):
        shipped_task_file("weather")


def test_splits_are_seeded_disjoint_and_stratified(topic: list[Example]) -> None:
    first, again, other = (split_examples(topic, seed) for seed in (13, 13, 14))
    assert first == again
    assert first.test != other.test
    texts = [{e.text for e in split} for split in (first.train, first.validation, first.test)]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert sum(first.sizes().values()) == len(topic)
    overall = _label_shares(topic)
    for split in (first.train, first.validation, first.test):
        for label, share in _label_shares(split).items():
            assert abs(share - overall[label]) < 0.02


def test_stratified_sample_keeps_label_mix(topic: list[Example]) -> None:
    sample = stratified_sample(topic, 200, seed=3)
    assert len(sample) == 200
    assert sample == stratified_sample(topic, 200, seed=3)
    overall = _label_shares(topic)
    for label, share in _label_shares(sample).items():
        assert abs(share - overall[label]) < 0.03
    assert stratified_sample(topic[:10], 50, seed=3) == topic[:10]
