"""The batch job's side of Redis on a single redis-server and on a real six-node Redis
Cluster alike: claiming a run, writing and verifying a generation, the shards' flip and its
announcement, and forgetting the misses a run covered."""

import json
import uuid
from collections.abc import Iterator

import pytest
import redis

from services.batch.inputs import TextSet
from services.batch.settings import Shard
from services.batch.store import FlipOutcome, GenerationStore
from services.contracts.cache_schema import (
    GENERATIONS_CHANNEL,
    generation_key,
    generation_meta_key,
    misses_seen_key,
    misses_stream_key,
    prediction_key_for_hash,
    text_hash,
)
from services.processes.redis_cluster import RedisClusterServers
from services.processes.redis_server import RedisServer


@pytest.fixture(params=["redis", "cluster"])
def client(
    request: pytest.FixtureRequest,
    redis_server: RedisServer,
    redis_cluster: RedisClusterServers,
) -> Iterator["redis.Redis"]:
    made = redis_server.client() if request.param == "redis" else redis_cluster.client()
    yield made  # type: ignore[misc]
    made.close()


def test_a_run_writes_verifies_flips_and_announces_on_one_slot_per_script(
    client: "redis.Redis",
) -> None:
    namespace = f"store-{uuid.uuid4().hex[:8]}"
    store = GenerationStore(client, namespace, ttl_seconds=600)
    state = store.claim("run-1", shards=2, include_misses=False, now=1000.0)
    assert store.claim("run-1", 2, False, 1001.0) == state, "a second worker joins the run"
    digests = [text_hash(f"text {i}") for i in range(2500)]
    values = [(d, json.dumps({"label": "x"})) for d in digests]
    assert store.missing(state.generation, digests[:10]) == digests[:10]
    store.write(state.generation, values[:1200])
    assert store.missing(state.generation, digests) == digests[1200:]
    store.write(state.generation, values[1200:])
    assert store.missing(state.generation, digests) == []
    key = prediction_key_for_hash(namespace, state.generation, digests[0])
    assert 0 < client.ttl(key) <= 600

    pubsub = client.pubsub()
    pubsub.subscribe(GENERATIONS_CHANNEL)
    assert pubsub.get_message(timeout=2.0) is not None  # the subscription itself
    first = store.finish_shard("run-1", state.generation, 0, 2, 1000, 1002.0, {"who": "t"})
    assert first == (FlipOutcome.WAITING, 1000)
    assert client.get(generation_key(namespace)) is None
    second = store.finish_shard("run-1", state.generation, 1, 2, 1500, 1003.0, {"who": "t"})
    assert second == (FlipOutcome.FLIPPED, 2500)
    assert client.get(generation_key(namespace)) == state.generation.encode()
    meta = client.hgetall(generation_meta_key(namespace, state.generation))
    assert meta[b"rows"] == b"2500" and meta[b"who"] == b"t"
    message = pubsub.get_message(timeout=2.0)
    assert message is not None
    assert message["data"] == f"{namespace} {state.generation}".encode()
    pubsub.close()
    again = store.finish_shard("run-1", state.generation, 1, 2, 1500, 1004.0, {})
    assert again[0] is FlipOutcome.FLIPPED_BEFORE


def test_the_misses_a_run_covered_are_forgotten(client: "redis.Redis") -> None:
    namespace = f"store-{uuid.uuid4().hex[:8]}"
    store = GenerationStore(client, namespace, ttl_seconds=600)
    for text in ("first miss", "second miss"):
        client.sadd(misses_seen_key(namespace), text_hash(text))
        client.xadd(misses_stream_key(namespace), {"text": text})
    state = store.claim("run-2", shards=1, include_misses=True, now=1000.0)
    client.xadd(misses_stream_key(namespace), {"text": "queued after the claim"})
    assert store.forget_misses(state.misses_until) == 2
    remaining = client.xrange(misses_stream_key(namespace))
    assert [fields[b"text"] for _, fields in remaining] == [b"queued after the claim"]
    assert client.scard(misses_seen_key(namespace)) == 0


def test_shards_that_all_found_nothing_never_flip_to_an_empty_generation(
    client: "redis.Redis",
) -> None:
    namespace = f"store-{uuid.uuid4().hex[:8]}"
    client.set(generation_key(namespace), "keep-me")
    store = GenerationStore(client, namespace, ttl_seconds=600)
    state = store.claim("run-3", shards=2, include_misses=False, now=1000.0)
    assert store.finish_shard("run-3", state.generation, 0, 2, 0, 1001.0, {})[0] is (
        FlipOutcome.WAITING
    )
    assert store.finish_shard("run-3", state.generation, 1, 2, 0, 1002.0, {}) == (
        FlipOutcome.NOTHING,
        0,
    )
    assert client.get(generation_key(namespace)) == b"keep-me"


def test_each_shard_reads_the_misses_it_owns_and_one_counts_each_unreadable_entry(
    client: "redis.Redis",
) -> None:
    namespace = f"store-{uuid.uuid4().hex[:8]}"
    stream = misses_stream_key(namespace)
    texts = [f"miss {i}" for i in range(60)]
    for text in texts:
        client.xadd(stream, {"text": text})
    client.xadd(stream, {"body": "no text"})
    client.xadd(stream, {"text": b"\xff\xfe"})
    store = GenerationStore(client, namespace, ttl_seconds=600)
    until = store.claim("run-4", shards=3, include_misses=True, now=1000.0).misses_until
    shards = [Shard(i, 3) for i in range(3)]
    read = []
    for shard in shards:
        into = TextSet(max_chars=50)
        added = store.read_misses(until, into, shard.owns)
        read.append((added, into))
    assert sum(added for added, _ in read) == 62
    assert sum(into.skipped.total() for _, into in read) == 2
    owned = [set(into.texts) for _, into in read]
    assert set().union(*owned) == {text_hash(t) for t in texts}
    assert sum(map(len, owned)) == 60 and all(owned)
