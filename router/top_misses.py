"""The most frequent uncached texts: counted here, kept in Redis by UTC day.

The router counts the texts the cache did not answer in memory, and every
`top_misses_flush_seconds` adds each namespace's counts to the day's sorted set in one
pipeline, off the request path. The set is bounded: past twice `top_misses_capacity` texts it
is cut back to the `capacity` most frequent, the usual approximate heavy hitters of a stream
(a text that comes often stays; the counts of rare ones are dropped). Only the `capacity` most
frequent texts of a flush are sent, and the count of all of them. The batch job labels the
most frequent of the last week (`switchyard batch run --top-misses N`) and reports how much
of that week's misses its generation answers.
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from services.contracts.text import normalize_text

__all__ = ["MissCounter", "MissCounts"]


@dataclass(frozen=True)
class MissCounts:
    namespace: str
    texts: dict[str, int]  # normalised text -> times uncached
    total: int  # every uncached text, counted or not


class MissCounter:
    def __init__(self, capacity: int) -> None:
        """`capacity`: texts sent per namespace and flush; 0 counts nothing."""
        self._capacity = capacity
        self._texts: dict[str, Counter[str]] = {}
        self._totals: Counter[str] = Counter()

    @property
    def enabled(self) -> bool:
        return self._capacity > 0

    def add(self, namespace: str, texts: Sequence[str]) -> None:
        if not self.enabled:
            return
        counts = self._texts.setdefault(namespace, Counter())
        for text in texts:
            normalized = normalize_text(text)
            # Bounded between flushes too: past that, new texts count in the total only.
            if normalized in counts or len(counts) < 4 * self._capacity:
                counts[normalized] += 1
        self._totals[namespace] += len(texts)

    def take(self) -> list[MissCounts]:
        """What was counted since the last take, the most frequent `capacity` texts each."""
        taken = [
            MissCounts(namespace, dict(self._texts[namespace].most_common(self._capacity)), total)
            for namespace, total in self._totals.items()
        ]
        self._texts, self._totals = {}, Counter()
        return taken
