"""The batch job's side of Redis: one run's state, its generation's keys, the flip, the misses.

A run is keyed by the fingerprint of its inputs, so a rerun after a crash finds the same
record and finishes the same generation. Every step that must not interleave with another
worker (claiming the run, recording a shard, flipping the pointer) is one Lua script, which
Redis runs atomically; on a Redis Cluster too, as each script's keys share the namespace's
hash tag (`services.contracts.cache_schema`). Predictions are written with a script on a
single Redis (one call per chunk of keys costs a fraction of the client-side work of
pipelined SETs); on a cluster, where a chunk's keys spread over every slot, with a pipeline
that redis-py splits into one per master.
"""

import enum
import hashlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import redis
import redis.cluster
from redis.exceptions import RedisClusterException, RedisError

from services.batch.errors import BatchError
from services.batch.inputs import TextSet
from services.contracts.cache_schema import (
    GENERATIONS_CHANNEL,
    batch_run_key,
    generation_key,
    generation_meta_key,
    miss_day,
    misses_count_key,
    misses_seen_key,
    misses_stream_key,
    prediction_key_for_hash,
    text_hash,
    top_misses_key,
)
from services.contracts.redis_connection import RedisSettings, sync_client

__all__ = ["FlipOutcome", "GenerationStore", "RunState", "connect", "stream_fields"]

# Keys per script call or pipeline: large enough to amortise a round trip, small enough to
# keep each call far below a millisecond of Redis time so readers never wait behind it.
_CHUNK = 1000
_MISSES_PAGE = 10_000
_WRITERS = 2

_CLAIM = """
if redis.call('HEXISTS', KEYS[1], 'finished_at') == 1 then
  redis.call('DEL', KEYS[1])
end
if redis.call('HSETNX', KEYS[1], 'generation', ARGV[1]) == 1 then
  local misses_until = '0-0'
  if ARGV[5] == '1' then
    local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
    if #last > 0 then misses_until = last[1][1] end
  end
  redis.call('HSET', KEYS[1], 'misses_until', misses_until, 'created_at', ARGV[2],
             'shards', ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
return redis.call('HMGET', KEYS[1], 'generation', 'misses_until', 'created_at', 'flipped_at')
"""

_WRITE = """
local ttl = ARGV[#KEYS + 1]
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i], 'EX', ttl)
end
return #KEYS
"""

_MISSING = """
local missing = {}
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then missing[#missing + 1] = i - 1 end
end
return missing
"""

_FINISH_SHARD = """
redis.call('HSET', KEYS[1], 'done:' .. ARGV[1], ARGV[2])
local shards, done, total = tonumber(ARGV[3]), 0, 0
for i = 0, shards - 1 do
  local count = redis.call('HGET', KEYS[1], 'done:' .. i)
  if count then
    done = done + 1
    total = total + tonumber(count)
  end
end
if done < shards then return {0, done, total} end
if redis.call('HEXISTS', KEYS[1], 'flipped_at') == 1 then return {2, done, total} end
if total == 0 then return {3, done, total} end
local meta = {'rows', total, 'flipped_at', ARGV[6]}
for i = 9, #ARGV do meta[#meta + 1] = ARGV[i] end
redis.call('HSET', KEYS[3], unpack(meta))
redis.call('EXPIRE', KEYS[3], ARGV[7])
redis.call('SET', KEYS[2], ARGV[4])
redis.call('HSET', KEYS[1], 'flipped_at', ARGV[6])
redis.call('PUBLISH', ARGV[5], ARGV[8])
return {1, done, total}
"""


class FlipOutcome(enum.Enum):
    WAITING = "waiting for other shards"
    FLIPPED = "flipped"
    FLIPPED_BEFORE = "flipped by an earlier attempt"
    # Every shard's share was empty: an empty generation would turn every hit into a miss.
    NOTHING = "no shard found a usable text; the current generation is unchanged"


@dataclass(frozen=True)
class RunState:
    generation: str
    misses_until: str
    created_at: float
    flipped: bool


def stream_fields(
    client: "redis.Redis", stream: str, until: str = "+", page: int = _MISSES_PAGE
) -> Iterator[dict[bytes, bytes]]:
    """The fields of each entry of `stream` up to entry `until` (its end by default), oldest
    first, read `page` entries at a time."""
    start = "-"
    while True:
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]], client.xrange(stream, start, until, count=page)
        )
        for _, fields in entries:
            yield fields
        if len(entries) < page:
            return
        start = "(" + entries[-1][0].decode()


def connect(settings: RedisSettings, timeout_s: float, cluster: bool = False) -> "redis.Redis":
    """A client checked with PING (of a Redis Cluster when `cluster`); BatchError (without
    credentials) if unreachable."""
    try:
        client = sync_client(
            settings, cluster=cluster, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
    except ValueError as exc:
        raise BatchError(f"invalid Redis URL: {exc}") from None
    except (RedisError, RedisClusterException, OSError) as exc:
        # A cluster client asks a node for the slots at once.
        raise BatchError(f"cannot reach the Redis Cluster: {exc}") from None
    try:
        client.ping()
    except (RedisError, RedisClusterException, OSError) as exc:
        if cluster:
            raise BatchError(f"cannot reach the Redis Cluster: {exc}") from None
        kwargs = client.connection_pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        raise BatchError(f"cannot reach Redis at {where}: {exc}") from None
    return client


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _next_stream_id(entry_id: str) -> str:
    milliseconds, _, sequence = entry_id.partition("-")
    return f"{milliseconds}-{int(sequence) + 1}"


class GenerationStore:
    def __init__(self, client: "redis.Redis", namespace: str, ttl_seconds: int) -> None:
        self._client = client
        self._cluster = isinstance(client, redis.cluster.RedisCluster)
        self._namespace = namespace
        self._ttl_seconds = ttl_seconds
        self._claim = client.register_script(_CLAIM)
        self._write = client.register_script(_WRITE)
        self._missing = client.register_script(_MISSING)
        self._finish_shard = client.register_script(_FINISH_SHARD)

    def claim(self, run_id: str, shards: int, include_misses: bool, now: float) -> RunState:
        """Join the run `run_id`, starting it (a new generation) unless one is under way."""
        new_generation = f"{int(now)}-{run_id[:8]}"
        generation, misses_until, created_at, flipped_at = self._claim(
            keys=[batch_run_key(self._namespace, run_id), misses_stream_key(self._namespace)],
            args=[new_generation, now, shards, self._ttl_seconds, int(include_misses)],
        )
        return RunState(
            generation=generation.decode(),
            misses_until=misses_until.decode(),
            created_at=float(created_at),
            flipped=flipped_at is not None,
        )

    def _misses(self, until: str) -> Iterator[dict[bytes, bytes]]:
        """The fields of each queued miss up to stream entry `until`, oldest first."""
        if until == "0-0":
            return iter(())
        return stream_fields(self._client, misses_stream_key(self._namespace), until)

    def read_misses(
        self, until: str, into: TextSet, owns: Callable[[str], bool] | None = None
    ) -> int:
        """Add the queued misses up to entry `until` whose hash `owns` accepts (all without
        it) to `into`; returns how many were added."""
        read = 0
        for fields in self._misses(until):
            raw = fields.get(b"text")
            try:
                text = None if raw is None else raw.decode("utf-8")
            except UnicodeDecodeError:
                text = None
            # An unreadable entry goes to the shard its bytes hash to, so one shard counts it.
            digest = text_hash(text) if text is not None else hashlib.sha256(raw or b"").hexdigest()
            if owns is not None and not owns(digest):
                continue
            read += 1
            if text is not None:
                into.add(text)
            else:
                into.skip("no 'text' field" if raw is None else "not UTF-8")
        return read

    def top_misses(self, now: float, days: int = 7) -> tuple[list[tuple[str, int]], int]:
        """The uncached texts the routers counted over the last `days` UTC days (today's so
        far included), most frequent first, and how many uncached texts came in those days."""
        names = [miss_day(now - back * 86400) for back in range(days)]
        # One slot (the namespace's hash tag): a single command on a cluster too.
        sets = [top_misses_key(self._namespace, day) for day in names]
        counted = cast(list[tuple[bytes, float]], self._client.zunion(sets, withscores=True))
        totals = self._client.mget([misses_count_key(self._namespace, d) for d in names])
        ranked = sorted(
            ((text.decode("utf-8", errors="replace"), int(count)) for text, count in counted),
            key=lambda pair: (-pair[1], pair[0]),
        )
        return ranked, sum(int(total) for total in totals if total is not None)

    def read_top_misses(
        self, limit: int, now: float, into: TextSet, owns: Callable[[str], bool] | None = None
    ) -> int:
        """Add the `limit` most frequent uncached texts of the last week whose hash `owns`
        accepts (all without it) to `into`; returns how many were added."""
        ranked, _ = self.top_misses(now)
        read = 0
        for text, _ in ranked[:limit]:
            if owns is None or owns(text_hash(text)):
                into.add(text)
                read += 1
        return read

    def misses_answered(self, generation: str, now: float) -> tuple[int, int]:
        """Of the last week's uncached texts, how many `generation` answers (counting the
        texts the routers kept, so at least this many), and how many came in all."""
        ranked, total = self.top_misses(now)
        digests = [text_hash(text) for text, _ in ranked]
        absent = set(self.missing(generation, digests))
        answered = sum(
            count
            for (_, count), digest in zip(ranked, digests, strict=True)
            if digest not in absent
        )
        return answered, total

    def missing(self, generation: str, digests: Sequence[str]) -> list[str]:
        """The digests whose prediction is not (yet) in `generation`."""
        absent: list[str] = []
        for chunk in _chunks(digests, _CHUNK):
            keys = [prediction_key_for_hash(self._namespace, generation, d) for d in chunk]
            if self._cluster:
                with self._client.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.exists(key)
                    found = pipe.execute()
                absent.extend(digest for digest, n in zip(chunk, found, strict=True) if not n)
            else:
                absent.extend(chunk[index] for index in self._missing(keys=keys))
        return absent

    def write(self, generation: str, values: Sequence[tuple[str, str]]) -> None:
        """Store (digest, CachedPrediction JSON) pairs in `generation`, with the run's TTL."""

        def write_chunk(chunk: Sequence[tuple[str, str]]) -> None:
            keys = [prediction_key_for_hash(self._namespace, generation, d) for d, _ in chunk]
            if self._cluster:
                with self._client.pipeline(transaction=False) as pipe:
                    for key, (_, value) in zip(keys, chunk, strict=True):
                        pipe.set(key, value, ex=self._ttl_seconds)
                    pipe.execute()
                return
            self._write(keys=keys, args=[value for _, value in chunk] + [self._ttl_seconds])

        # Two calls in flight: one chunk is packed here while Redis runs the other, which
        # nearly doubles the rate of a single caller (the socket wait releases the GIL).
        with ThreadPoolExecutor(_WRITERS) as pool:
            list(pool.map(write_chunk, _chunks(values, _CHUNK)))

    def finish_shard(
        self,
        run_id: str,
        generation: str,
        shard: int,
        shards: int,
        written: int,
        now: float,
        meta: dict[str, str],
    ) -> tuple[FlipOutcome, int]:
        """Record this shard's verified count; the shard that completes the run flips the
        current-generation pointer and announces it. Returns the outcome and the run's rows."""
        announcement = f"{self._namespace} {generation}"
        fields = [item for pair in meta.items() for item in pair]
        outcome, _, total = self._finish_shard(
            keys=[
                batch_run_key(self._namespace, run_id),
                generation_key(self._namespace),
                generation_meta_key(self._namespace, generation),
            ],
            args=[
                shard,
                written,
                shards,
                generation,
                GENERATIONS_CHANNEL,
                now,
                self._ttl_seconds,
                announcement,
                *fields,
            ],
        )
        return list(FlipOutcome)[int(outcome)], int(total)

    def forget_misses(self, until: str) -> int:
        """Remove the misses a flipped run covered: first from the set of queued hashes (so a
        later miss of the same text is queued again), then from the stream."""
        if until == "0-0":
            return 0
        seen = misses_seen_key(self._namespace)
        digests = [
            text_hash(fields[b"text"].decode("utf-8", errors="replace"))
            for fields in self._misses(until)
            if b"text" in fields
        ]
        for chunk in _chunks(digests, _CHUNK):
            self._client.srem(seen, *chunk)
        removed: int = self._client.xtrim(
            misses_stream_key(self._namespace), minid=_next_stream_id(until), approximate=False
        )
        return removed

    def mark_finished(self, run_id: str, now: float) -> None:
        self._client.hset(batch_run_key(self._namespace, run_id), "finished_at", str(now))
