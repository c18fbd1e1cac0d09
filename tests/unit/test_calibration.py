"""Confidence-threshold calibration over a scored sample (`switchyard quality calibrate`)."""

import pytest

from services.batch.calibration import calibrate, lowest_threshold, parse_thresholds
from services.batch.errors import BatchError
from services.batch.quality import ScoredSample
from services.contracts.quality_schema import QualitySample, wilson_interval


def scored(confidence: float, agreed: bool) -> ScoredSample:
    scores = {"yes": confidence, "no": 1 - confidence}
    sample = QualitySample("a text", "yes", scores, "spam", "1", 0.0)
    return ScoredSample(sample, "yes" if agreed else "no")


def test_each_threshold_splits_the_sample_into_queued_and_kept_answers() -> None:
    # Unsure answers err more: 4 below 0.7 (2 wrong), 6 at or above it (1 wrong).
    judged = [(0.55, False), (0.6, True), (0.65, False), (0.69, True), (0.7, True),
              (0.8, True), (0.85, False), (0.9, True), (0.95, True), (0.99, True)]  # fmt: skip
    sample = [scored(confidence, agreed) for confidence, agreed in judged]
    low, middle, high = calibrate(sample, [0.9, 0.5, 0.7])
    assert (low.threshold, low.queued, low.kept, low.kept_wrong) == (0.5, 0, 10, 3)
    assert low.error_below is None and low.error_above == pytest.approx(0.3)
    assert (middle.queued, middle.queued_wrong, middle.kept, middle.kept_wrong) == (4, 2, 6, 1)
    assert middle.queued_share == pytest.approx(0.4)
    assert middle.error_below == pytest.approx(0.5)
    assert middle.error_above == pytest.approx(1 / 6)
    assert middle.error_above_high == pytest.approx(wilson_interval(1, 6)[1])
    assert (high.queued, high.kept, high.kept_wrong) == (7, 3, 0)


def test_the_lowest_threshold_meets_the_target_at_the_intervals_upper_end() -> None:
    sample = [scored(0.6, i % 2 == 0) for i in range(40)] + [scored(0.95, True)] * 200
    rows = calibrate(sample, [0.5, 0.7, 0.9])
    best = lowest_threshold(rows, target_error=0.05)
    assert best is not None and best.threshold == 0.7
    # A handful of right answers is no proof: their interval is too wide.
    few = calibrate([scored(0.95, True)] * 5, [0.5])
    assert lowest_threshold(few, target_error=0.05) is None
    assert lowest_threshold(calibrate([], [0.5]), 0.05) is None


@pytest.mark.parametrize("value", ["0.5,abc", "0,0.5", "1.5", ","])
def test_bad_thresholds_are_refused(value: str) -> None:
    with pytest.raises(BatchError, match="--thresholds"):
        parse_thresholds(value)
    assert parse_thresholds("0.9, 0.5,0.5") == [0.5, 0.9]
