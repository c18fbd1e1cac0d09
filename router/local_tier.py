"""The router's in-process tier over immutable cache generations.

A flipped generation never changes: a key present in it keeps its value until it expires, and
a key absent from it stays absent. So decoded predictions, and known misses, can be kept in
the router's memory under (namespace, generation, text hash) with no invalidation protocol:
a flip changes the generation in the key, and the old generation's entries are dropped
wholesale when the router moves off it. An entry lives at most `max_age_s`, and never past
its generation's expiry (its start plus the batch job's TTL), so the tier never answers for
a key Redis has let go. Bounded by entries, least recently used first (cachetools'
time-aware LRU).
"""

import math
import time
from collections.abc import Callable

from cachetools import TLRUCache

from services.contracts.cache_schema import CachedPrediction

__all__ = ["NOT_HELD", "LocalTier", "NotHeld"]

Key = tuple[str, str, str]  # namespace, generation, text hash


class NotHeld:
    """The tier holds nothing for a key (neither an answer nor a known miss)."""


NOT_HELD = NotHeld()


class _Entries(TLRUCache[Key, CachedPrediction | None]):
    def __init__(
        self,
        max_entries: int,
        expiry: Callable[[Key, object, float], float],
        evicted: Callable[[], None],
    ) -> None:
        super().__init__(max_entries, expiry, timer=time.time)
        self._evicted = evicted

    def popitem(self) -> tuple[Key, CachedPrediction | None]:
        # Called only to make room: the least recently used live entry goes.
        item = super().popitem()
        self._evicted()
        return item


class LocalTier:
    """`max_entries` 0 turns the tier off: every read goes to Redis."""

    def __init__(
        self, max_entries: int, max_age_s: float, on_evict: Callable[[], None] = lambda: None
    ) -> None:
        self._max_age_s = max_age_s
        self._expires_at: dict[tuple[str, str], float] = {}
        self._entries = _Entries(max_entries, self._expiry, on_evict) if max_entries else None

    @property
    def enabled(self) -> bool:
        return self._entries is not None

    def __len__(self) -> int:
        return 0 if self._entries is None else len(self._entries)

    def _expiry(self, key: Key, value: object, now: float) -> float:
        namespace, generation, _ = key
        return min(now + self._max_age_s, self._expires_at.get((namespace, generation), math.inf))

    def follow(self, namespace: str, generation: str, expires_at: float | None) -> None:
        """Entries of `generation` expire by `expires_at` (Unix time; None: unknown)."""
        if expires_at is not None:
            self._expires_at[(namespace, generation)] = expires_at

    def retire(self, namespace: str, generation: str) -> None:
        """Drop every entry of `generation`: the router no longer reads it."""
        self._expires_at.pop((namespace, generation), None)
        if self._entries is None:
            return
        for key in [k for k in self._entries if k[0] == namespace and k[1] == generation]:
            self._entries.pop(key, None)

    def get(
        self, namespace: str, generation: str, digest: str
    ) -> CachedPrediction | NotHeld | None:
        """The prediction held for the key, None for a known miss, NOT_HELD for neither."""
        if self._entries is None:
            return NOT_HELD
        return self._entries.get((namespace, generation, digest), NOT_HELD)

    def put(
        self, namespace: str, generation: str, digest: str, prediction: CachedPrediction | None
    ) -> None:
        """Keep Redis's answer for the key: a prediction, or None for a key it does not hold."""
        if self._entries is not None:
            self._entries[(namespace, generation, digest)] = prediction
