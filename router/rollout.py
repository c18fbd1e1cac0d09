"""Which versions answer a model's traffic: the rollout records in Redis, as the router
follows them, and the split of a canary.

The records are read with one MGET per version poll, and at once when
`switchyard models canary|promote|rollback` announces a change on pub/sub, so every router
of a deployment moves within about a second. While Redis cannot be read, each router keeps
the last records it read.
"""

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import redis.asyncio as redis

from router.announcements import Announcements
from services.contracts.rollout_schema import ROLLOUTS_CHANNEL, Rollout, canary_share, rollout_key

__all__ = ["RolloutRecords", "Serving", "StudentModel"]

_log = logging.getLogger(__name__)
_CLOSE_WAIT_S = 5.0


class StudentModel(Protocol):
    """One loaded version of a student model."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def labels(self) -> list[str]: ...


ModelT = TypeVar("ModelT", bound=StudentModel, covariant=True)


@dataclass(frozen=True)
class Serving(Generic[ModelT]):
    """What answers one model's traffic now: the stable version, and a candidate beside it
    that answers a `weight` share of the texts and is asked a `shadow` share of the rest."""

    stable: ModelT
    candidate: ModelT | None = None
    weight: float = 0.0
    shadow: float = 0.0

    @property
    def versions(self) -> tuple[str, str, float, float]:
        """What tells two Servings apart (the loaded files are the versions' own)."""
        candidate = "" if self.candidate is None else self.candidate.version
        return self.stable.version, candidate, self.weight, self.shadow

    def to_candidate(self, texts: Sequence[str]) -> list[bool]:
        """For each text, whether the candidate answers it; the same text always gets the
        same version for as long as the weight stays."""
        if self.candidate is None or self.weight <= 0.0:
            return [False] * len(texts)
        name = self.stable.name
        return [canary_share(name, text) < self.weight for text in texts]


class RolloutRecords:
    """The rollout record of each served model, as last read from Redis."""

    def __init__(self, client: "redis.Redis", timeout_s: float, changed: asyncio.Event) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._records: dict[str, Rollout] = {}
        self._failing = False
        self._announcements = Announcements(client, ROLLOUTS_CHANNEL, self._announced, self._nudge)
        self._changed = changed

    def start(self) -> None:
        self._announcements.start()

    async def close(self) -> None:
        if not await self._announcements.close(_CLOSE_WAIT_S):
            _log.warning("rollout announcements did not stop within %.0f s", _CLOSE_WAIT_S)
        await self._client.aclose()

    async def read(self, models: Sequence[str]) -> dict[str, Rollout]:
        """Each model's record (the default for a model without one); the last ones read
        while Redis cannot be reached, and the default for one that is malformed."""
        if not models:
            return {}
        keys = [rollout_key(model) for model in models]
        try:
            async with asyncio.timeout(self._timeout_s):
                values = await self._client.mget(keys)
        except Exception as exc:  # redis-py's cluster client raises more than RedisError
            if not self._failing:
                _log.warning("cannot read the rollout records (%s); keeping the last ones", exc)
            self._failing = True
            return {model: self._records.get(model, Rollout()) for model in models}
        self._failing = False
        records = {}
        for model, value in zip(models, values, strict=True):
            try:
                records[model] = Rollout() if value is None else Rollout.from_json(value)
            except ValueError as exc:
                # The last good record stands: a canary must not end by a half-written value.
                last = self._records.get(model, Rollout())
                _log.warning(
                    "the rollout record of %s is malformed (%s); keeping %s", model, exc, last
                )
                records[model] = last
        self._records = records
        return records

    async def _announced(self, model: str) -> None:
        await self._nudge()

    async def _nudge(self) -> None:
        self._changed.set()
