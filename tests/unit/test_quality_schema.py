"""The quality records' layout and the interval they publish."""

import random

import pytest

from services.contracts.quality_schema import (
    QualityRecord,
    QualitySample,
    VersionAgreement,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("agreed", "total", "low", "high"),
    [
        (8, 10, 0.4902, 0.9433),  # textbook values of the 95% Wilson interval
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (450, 500, 0.8706, 0.9233),
    ],
)
def test_wilson_interval_matches_known_values(
    agreed: int, total: int, low: float, high: float
) -> None:
    assert wilson_interval(agreed, total) == pytest.approx((low, high), abs=1e-4)


def test_wilson_interval_covers_the_true_share_about_95_percent_of_the_time() -> None:
    draw = random.Random(20)
    covered = 0
    for _ in range(2000):
        agreed = sum(draw.random() < 0.85 for _ in range(60))
        low, high = wilson_interval(agreed, 60)
        covered += low <= 0.85 <= high
    assert 0.92 < covered / 2000 < 0.98


def test_wilson_interval_of_nothing_is_everything_and_bad_counts_are_refused() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="agreed"):
        wilson_interval(11, 10)


def test_samples_and_records_round_trip_and_foreign_values_are_refused() -> None:
    sample = QualitySample("a text", "sports", {"sports": 0.7, "tech": 0.3}, "topic", "3", 12.5)
    fields = {k.encode(): v.encode() for k, v in sample.to_fields().items()}
    assert QualitySample.from_fields(fields) == sample
    with pytest.raises(ValueError, match="not a quality sample"):
        QualitySample.from_fields({b"text": b"only a text"})
    record = QualityRecord(
        "topic", "topic-teacher:1", 99.0, [VersionAgreement("topic", "3", 40, 36)]
    )
    assert QualityRecord.from_json(record.to_json()) == record
    assert record.versions[0].agreement == 0.9
    for raw in (
        b"",
        b"[]",
        b'{"task": "t"}',
        record.to_json().replace('"agreed":36', '"agreed":41'),
    ):
        with pytest.raises(ValueError, match="malformed quality record"):
            QualityRecord.from_json(raw)
