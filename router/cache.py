"""The cache route: the offline teacher's predictions in Redis, read with redis.asyncio.

Each call is bounded by a timeout and guarded by a circuit breaker, so a dead or slow Redis
costs at most one timeout per breaker window and the router keeps answering from the model.
The current generation of each namespace is held in memory: refreshed at once when the batch
job announces a flip on pub/sub, and by a slow poll in case an announcement was missed.
Predictions and known misses of the current generations are also kept in memory
(`router.local_tier`), so hot texts skip Redis altogether.

On a Redis Cluster a batch's keys lie in many slots: they are read with one MGET per slot,
pipelined per master (redis-py's `mget_nonatomic`), under the same timeout and breaker as the
single MGET of one Redis. Classic pub/sub reaches every node of a cluster, so a flip is
announced and heard as on one Redis.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from opentelemetry import trace
from redis.exceptions import RedisError

from router.announcements import Announcements
from router.errors import DependencyUnavailable
from router.local_tier import LocalTier, NotHeld
from router.tracing import NO_TRACER
from services.contracts.cache_schema import (
    GENERATIONS_CHANNEL,
    MISS_DAYS_KEPT,
    CachedPrediction,
    generation_key,
    generation_meta_key,
    legacy_generation_key,
    miss_day,
    misses_count_key,
    misses_seen_key,
    misses_stream_key,
    prediction_key_for_hash,
    quality_record_key,
    quality_samples_key,
    text_hash,
    top_misses_key,
)
from services.contracts.quality_schema import QualityRecord, QualitySample

__all__ = ["CacheRead", "CircuitBreaker", "PredictionCache"]

_log = logging.getLogger(__name__)
_CLOSE_WAIT_S = 5.0
_LOG_EVERY_S = 10.0


class CircuitBreaker:
    """Opens after `failures` consecutive errors; lets one trial call through after `reset_s`."""

    def __init__(self, failures: int, reset_s: float) -> None:
        self._threshold = failures
        self._reset_s = reset_s
        self._failures = 0
        self._open_until = 0.0

    def allow(self) -> bool:
        return self._failures < self._threshold or time.monotonic() >= self._open_until

    def record(self, ok: bool) -> None:
        if ok:
            self._failures = 0
            return
        self._failures += 1
        if self._failures >= self._threshold:
            self._open_until = time.monotonic() + self._reset_s

    @property
    def is_open(self) -> bool:
        return not self.allow()


@dataclass(frozen=True)
class CacheRead:
    """One batch read: each text's prediction (None for a miss), how many values were
    malformed, and how many answers (or known misses) the in-process tier gave."""

    predictions: list[CachedPrediction | None]
    malformed: int
    from_tier: int


class PredictionCache:
    def __init__(
        self,
        client: "redis.Redis",
        namespaces: Sequence[str],
        timeout_s: float,
        breaker: CircuitBreaker,
        stream_max_len: int,
        poll_s: float,
        tier: LocalTier,
        samples_max_len: int = 10_000,
        tracer: trace.Tracer = NO_TRACER,
    ) -> None:
        self._client = client
        self._tracer = tracer
        self._samples_max_len = samples_max_len
        self._tier = tier
        self._library_error_logged_at = float("-inf")
        self._namespaces = list(namespaces)
        self._timeout_s = timeout_s
        self._breaker = breaker
        self._stream_max_len = stream_max_len
        self._poll_s = poll_s
        self._generations: dict[str, str] = {}
        self._created_at: dict[str, float] = {}
        self._poll: asyncio.Task[None] | None = None
        self._announcements = Announcements(
            client, GENERATIONS_CHANNEL, self._announced, self._refresh_quietly
        )

    @property
    def tier_enabled(self) -> bool:
        return self._tier.enabled

    def generation(self, namespace: str) -> str | None:
        return self._generations.get(namespace)

    def generation_age(self, namespace: str) -> float:
        """Seconds since the batch job started the current generation; NaN when unknown."""
        created_at = self._created_at.get(namespace)
        return float("nan") if created_at is None else time.time() - created_at

    async def _switch(self, namespace: str, generation: str) -> None:
        """Follow `generation`, and learn when it was made, and so when its keys expire,
        from its meta record."""
        previous = self._generations.get(namespace)
        if previous == generation and namespace in self._created_at:
            return
        if previous != generation:
            self._generations[namespace] = generation
            self._created_at.pop(namespace, None)
            if previous is not None:
                self._tier.retire(namespace, previous)
        created_at, ttl_seconds = await self._call(
            "HMGET meta",
            self._timeout_s,
            self._client.hmget(
                generation_meta_key(namespace, generation), ["created_at", "ttl_seconds"]
            ),
        )
        if created_at is not None and self._generations.get(namespace) == generation:
            self._created_at[namespace] = float(created_at)
            if ttl_seconds is not None:
                self._tier.follow(namespace, generation, float(created_at) + float(ttl_seconds))

    async def start(self) -> None:
        await self._refresh_quietly()
        self._announcements.start()
        self._poll = asyncio.create_task(self._poll_generations())

    async def close(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll
        if not await self._announcements.close(_CLOSE_WAIT_S):
            _log.warning("generation announcements did not stop within %.0f s", _CLOSE_WAIT_S)
        await self._client.aclose()

    async def _call(self, operation: str, timeout_s: float, call: Awaitable[Any]) -> Any:
        """Run one Redis call under the breaker and a timeout; errors become UNAVAILABLE."""
        if not self._breaker.allow():
            if asyncio.iscoroutine(call):
                call.close()
            raise DependencyUnavailable("redis is unavailable (circuit open after failures)")
        try:
            # asyncio.timeout, not wait_for: no extra task per call on the request path.
            async with asyncio.timeout(min(timeout_s, self._timeout_s)):
                result = await call
        except (RedisError, OSError, TimeoutError) as exc:
            self._breaker.record(ok=False)
            raise DependencyUnavailable(f"redis {operation} failed: {type(exc).__name__}") from exc
        except Exception as exc:
            # redis-py's cluster client can fail with other errors while it learns the slots
            # anew after a failover (seen: AttributeError); still Redis failing, never ours.
            self._breaker.record(ok=False)
            if time.monotonic() - self._library_error_logged_at > _LOG_EVERY_S:
                self._library_error_logged_at = time.monotonic()
                _log.warning("redis %s failed inside redis-py: %r", operation, exc)
            raise DependencyUnavailable(f"redis {operation} failed: {type(exc).__name__}") from exc
        self._breaker.record(ok=True)
        return result

    async def follow(self, namespaces: Iterable[str]) -> None:
        """Follow these namespaces' generations from now on (the router's task set changed)."""
        wanted = set(namespaces)
        added = wanted - set(self._namespaces)
        self._namespaces = sorted(wanted)
        if added:
            with contextlib.suppress(DependencyUnavailable):
                await self.refresh_generations()

    async def refresh_generations(self) -> None:
        namespaces = list(self._namespaces)
        if not namespaces:
            return
        values = await self._get_all("MGET generation", [generation_key(n) for n in namespaces])
        if not isinstance(self._client, redis.RedisCluster) and None in values:
            # A namespace no batch run has flipped since the layout got its hash tags.
            legacy = await self._get_all(
                "MGET legacy generation", [legacy_generation_key(n) for n in namespaces]
            )
            values = [new or old for new, old in zip(values, legacy, strict=True)]
        for namespace, value in zip(namespaces, values, strict=True):
            if value is not None:
                await self._switch(namespace, value.decode())

    async def _get_all(
        self, operation: str, keys: list[str], timeout_s: float | None = None
    ) -> list[bytes | None]:
        """The values of `keys` (None where absent): one GET or MGET, or one MGET per slot on
        a cluster."""
        client = self._client
        timeout_s = self._timeout_s if timeout_s is None else timeout_s
        if len(keys) == 1:  # a GET: cheaper for redis-py to send and parse than an MGET
            value: bytes | None = await self._call(operation, timeout_s, client.get(keys[0]))
            return [value]
        read = (
            client.mget_nonatomic(keys)
            if isinstance(client, redis.RedisCluster)
            else client.mget(keys)
        )
        values: list[bytes | None] = await self._call(operation, timeout_s, read)
        return values

    async def get_many(
        self,
        namespace: str,
        generation: str,
        texts: Sequence[str],
        labels: Sequence[str],
        timeout_s: float,
    ) -> CacheRead:
        """`generation`'s prediction for each text (None for a miss): from the in-process tier
        where it holds the key, else from Redis. A corrupted value, or a foreign one whose
        labels are not the task's `labels`, is malformed: a miss, never an answer.

        The caller passes the generation it read once, so one request never mixes two
        generations even when a flip lands while it is in flight.
        """
        if not generation:
            return CacheRead([None] * len(texts), 0, 0)
        digests = [text_hash(text) for text in texts]
        predictions: list[CachedPrediction | None] = [None] * len(texts)
        expected = set(labels)
        malformed = 0
        asked: list[int] = []
        with self._tracer.start_as_current_span("cache tier") as span:
            for index, digest in enumerate(digests):
                held = self._tier.get(namespace, generation, digest)
                if isinstance(held, NotHeld):
                    asked.append(index)
                elif held is not None and held.scores.keys() != expected:
                    malformed += 1
                else:
                    predictions[index] = held
            from_tier = len(texts) - len(asked)
            span.set_attribute("switchyard.cache.tier_answered", from_tier)
        if not asked:
            return CacheRead(predictions, malformed, from_tier)
        keys = [prediction_key_for_hash(namespace, generation, digests[i]) for i in asked]
        operation = "GET" if len(keys) == 1 else "MGET"
        with self._tracer.start_as_current_span(
            f"redis {operation}", kind=trace.SpanKind.CLIENT
        ) as span:
            span.set_attributes({"db.system.name": "redis", "db.operation.name": operation,
                                 "db.operation.batch.size": len(keys)})  # fmt: skip
            values = await self._get_all(operation, keys, timeout_s)
        # Kept only while this is still the namespace's generation: a read that outlived a
        # flip must not fill the tier with a retired generation.
        current = self._generations.get(namespace) == generation
        for index, value in zip(asked, values, strict=True):
            try:
                prediction = None if value is None else CachedPrediction.from_json(value)
            except ValueError:
                malformed += 1
                continue
            if prediction is not None and prediction.scores.keys() != expected:
                malformed += 1
                continue
            predictions[index] = prediction
            if current:
                self._tier.put(namespace, generation, digests[index], prediction)
        return CacheRead(predictions, malformed, from_tier)

    async def queue_misses(self, namespace: str, texts: Sequence[str]) -> int:
        """Append texts not queued before to the capped stream of misses; returns how many."""
        queued = 0
        for text in texts:
            added = await self._call(
                "SADD",
                self._timeout_s,
                self._client.sadd(misses_seen_key(namespace), text_hash(text)),
            )
            if added:
                await self._call(
                    "XADD",
                    self._timeout_s,
                    self._client.xadd(
                        misses_stream_key(namespace),
                        {"text": text},
                        maxlen=self._stream_max_len,
                        approximate=True,
                    ),
                )
                queued += 1
        return queued

    async def count_misses(
        self, namespace: str, counts: Mapping[str, int], total: int, now: float, capacity: int
    ) -> None:
        """Add counts of uncached (normalised) texts, and their `total`, to the day's; past
        twice `capacity` texts, the day's set is cut back to its `capacity` most frequent."""
        day = miss_day(now)
        top, count = top_misses_key(namespace, day), misses_count_key(namespace, day)
        ttl_s = MISS_DAYS_KEPT * 86400
        # One slot (the namespace's hash tag), so one round trip on a cluster too.
        pipe = self._client.pipeline(transaction=False)
        for text, times in counts.items():
            pipe.zincrby(top, times, text)
        pipe.incrby(count, total)
        pipe.expire(top, ttl_s)
        pipe.expire(count, ttl_s)
        pipe.zcard(top)
        replies = await self._call("count misses", self._timeout_s, pipe.execute())
        if replies[-1] > 2 * capacity:
            await self._call(
                "ZREMRANGEBYRANK",
                self._timeout_s,
                self._client.zremrangebyrank(top, 0, -(capacity + 1)),
            )

    async def record_samples(self, namespace: str, samples: Sequence[QualitySample]) -> None:
        """Append sampled model-route answers to the namespace's capped stream of them, in
        one round trip."""
        pipe = self._client.pipeline(transaction=False)
        for sample in samples:
            pipe.xadd(
                quality_samples_key(namespace),
                sample.to_fields(),  # type: ignore[arg-type]
                maxlen=self._samples_max_len,
                approximate=True,
            )
        await self._call("XADD", self._timeout_s, pipe.execute())

    async def quality_record(self, namespace: str) -> QualityRecord | None:
        """The namespace's last quality scoring; None when there is none (or none readable)."""
        raw = await self._call(
            "GET quality", self._timeout_s, self._client.get(quality_record_key(namespace))
        )
        if raw is None:
            return None
        try:
            return QualityRecord.from_json(raw)
        except ValueError as exc:
            _log.warning("ignoring the quality record of %s: %s", namespace, exc)
            return None

    async def ping(self) -> bool:
        try:
            await asyncio.wait_for(self._client.ping(), self._timeout_s * 4)
        except Exception:  # whatever redis-py raises (see _call): Redis is not answering
            return False
        return True

    async def _refresh_quietly(self) -> None:
        with contextlib.suppress(DependencyUnavailable):
            await self.refresh_generations()

    async def _poll_generations(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            await self._refresh_quietly()

    async def _announced(self, data: str) -> None:
        """Switch generations as soon as the batch job announces a flip."""
        namespace, _, generation = data.partition(" ")
        if namespace in self._namespaces and generation:
            with contextlib.suppress(DependencyUnavailable):
                await self._switch(namespace, generation)
