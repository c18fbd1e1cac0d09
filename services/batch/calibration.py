"""`switchyard quality calibrate`: the confidence threshold that decides which model answers
are queued for the next offline run, read off the teacher's verdict on the sampled answers.

The router queues a model-route answer when its confidence is below the task's
`confidence_threshold`. A higher threshold queues more answers (more teacher time in the next
run, more of the traffic cached after it) and leaves only the more confident ones unqueued,
which err less. For each threshold the scored sample tells the share of answers it queues and
the student's error rate (disagreement with the teacher) on those below and above it; the
lowest threshold whose unqueued answers err at most a target rate, at the upper end of the
95% interval, is the one that queues the least for that promise.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from services.batch.errors import BatchError
from services.batch.quality import ScoredSample
from services.contracts.quality_schema import wilson_interval

__all__ = [
    "DEFAULT_THRESHOLDS",
    "ThresholdRow",
    "calibrate",
    "lowest_threshold",
    "parse_thresholds",
]

DEFAULT_THRESHOLDS = tuple(round(0.3 + 0.05 * step, 2) for step in range(14))  # 0.3 .. 0.95


@dataclass(frozen=True)
class ThresholdRow:
    threshold: float
    queued: int  # answers below the threshold
    queued_wrong: int  # of them, the ones the teacher labelled otherwise
    kept: int  # answers at or above it
    kept_wrong: int

    @property
    def queued_share(self) -> float:
        total = self.queued + self.kept
        return self.queued / total if total else 0.0

    @property
    def error_below(self) -> float | None:
        return self.queued_wrong / self.queued if self.queued else None

    @property
    def error_above(self) -> float | None:
        return self.kept_wrong / self.kept if self.kept else None

    @property
    def error_above_high(self) -> float:
        """Upper end of the 95% interval of the error above the threshold."""
        return wilson_interval(self.kept_wrong, self.kept)[1]


def parse_thresholds(value: str) -> list[float]:
    """'0.5,0.6,0.7' as sorted thresholds in (0, 1]; BatchError otherwise."""
    try:
        thresholds = sorted({float(part) for part in value.split(",") if part.strip()})
    except ValueError:
        raise BatchError(
            f"--thresholds must be numbers such as 0.5,0.6,0.7, got {value!r}"
        ) from None
    if not thresholds or not all(0.0 < t <= 1.0 for t in thresholds):
        raise BatchError(f"--thresholds must lie in (0, 1], got {value!r}")
    return thresholds


def calibrate(scored: Sequence[ScoredSample], thresholds: Sequence[float]) -> list[ThresholdRow]:
    """One row per threshold, ascending; an answer's confidence is its label's score."""
    judged = [(item.sample.scores[item.sample.label], item.agreed) for item in scored]
    rows = []
    for threshold in sorted(thresholds):
        below = [agreed for confidence, agreed in judged if confidence < threshold]
        above = [agreed for confidence, agreed in judged if confidence >= threshold]
        rows.append(
            ThresholdRow(
                threshold,
                queued=len(below),
                queued_wrong=below.count(False),
                kept=len(above),
                kept_wrong=above.count(False),
            )
        )
    return rows


def lowest_threshold(rows: Sequence[ThresholdRow], target_error: float) -> ThresholdRow | None:
    """The lowest threshold whose unqueued answers err at most `target_error` even at the
    upper end of their 95% interval; None when none does (or too few answers are left)."""
    return next((row for row in rows if row.kept and row.error_above_high <= target_error), None)
