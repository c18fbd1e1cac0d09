"""The in-process tier over immutable generations, on its own and through the router's real
gRPC port on a real redis-server; and single flight on the model route."""

import asyncio
import time
from typing import Any

import pytest

from router.client import AsyncRouterClient, Route
from router.errors import DependencyUnavailable
from router.local_tier import LocalTier, NotHeld
from services.contracts.cache_schema import (
    CachedPrediction,
    generation_key,
    generation_meta_key,
    prediction_key,
)
from services.processes.redis_server import RedisServer
from services.reliability.testbed import publish_generation
from tests.unit.router.conftest import Bed, bed_settings, run_on_bed, until
from tests.unit.router.fakes import TOPIC_LABELS, FakeStudent, fake_label

TEXT = "Oil prices climb as supply tightens"


def prediction(label: str) -> CachedPrediction:
    return CachedPrediction(label, dict.fromkeys(TOPIC_LABELS, 0.2), "teacher-test", "7", 0.0)


def test_the_tier_is_bounded_least_recently_used_first_and_counts_evictions() -> None:
    evicted = []
    tier = LocalTier(3, 3600.0, on_evict=lambda: evicted.append(1))
    for i in range(3):
        tier.put("ns", "g1", f"h{i}", prediction("business"))
    assert tier.get("ns", "g1", "h0") is not None  # h0 is now the most recently used
    tier.put("ns", "g1", "h3", None)
    tier.put("ns", "g1", "h4", prediction("tech"))
    assert len(tier) == 3 and len(evicted) == 2
    assert isinstance(tier.get("ns", "g1", "h1"), NotHeld)
    assert isinstance(tier.get("ns", "g1", "h2"), NotHeld)
    assert tier.get("ns", "g1", "h3") is None  # a known miss
    assert isinstance(tier.get("ns", "g1", "h0"), CachedPrediction)


def test_entries_never_outlive_their_generation_or_the_max_age() -> None:
    tier = LocalTier(100, 3600.0)
    tier.follow("ns", "short", time.time() + 0.2)
    tier.put("ns", "short", "h", prediction("business"))
    tier.put("ns", "long", "h", prediction("business"))
    young = LocalTier(100, 0.2)
    young.put("ns", "g", "h", prediction("business"))
    assert isinstance(tier.get("ns", "short", "h"), CachedPrediction)
    time.sleep(0.3)
    assert isinstance(tier.get("ns", "short", "h"), NotHeld)
    assert isinstance(tier.get("ns", "long", "h"), CachedPrediction)
    assert isinstance(young.get("ns", "g", "h"), NotHeld)


def test_a_retired_generation_is_dropped_wholesale_and_a_tier_of_zero_holds_nothing() -> None:
    tier = LocalTier(100, 3600.0)
    for i in range(10):
        tier.put("ns", "old", f"h{i}", prediction("business"))
        tier.put("other", "old", f"h{i}", None)
    tier.retire("ns", "old")
    assert len(tier) == 10
    assert all(isinstance(tier.get("ns", "old", f"h{i}"), NotHeld) for i in range(10))
    off = LocalTier(0, 3600.0)
    off.put("ns", "g", "h", prediction("business"))
    assert not off.enabled and len(off) == 0
    assert isinstance(off.get("ns", "g", "h"), NotHeld)


def run(
    redis_server: RedisServer, body: Any, student: FakeStudent | None = None, **kw: Any
) -> None:
    run_on_bed(bed_settings(redis_server.url, **kw), body, student)


def test_hot_texts_skip_redis_and_a_flip_never_serves_the_old_generation(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client()

    async def body(bed: Bed) -> None:
        namespace = bed.namespace("topic")
        old = await bed.publish("topic", {TEXT: "business"}, client)
        assert (await bed.client.predict("topic", TEXT)).route == Route.CACHE
        # The generation is immutable, so the tier may answer without Redis: prove it does
        # by taking the key away behind its back.
        client.delete(prediction_key(namespace, old, TEXT))
        again = await bed.client.predict("topic", TEXT)
        assert (again.route, again.label, again.cache_generation) == (Route.CACHE, "business", old)
        assert bed.metric("switchyard_cache_tier_hits_total", task="topic") == 1
        assert bed.metric("switchyard_cache_tier_misses_total", task="topic") == 1
        assert bed.metric("switchyard_cache_tier_entries") == 1

        new = await bed.publish("topic", {TEXT: "tech"}, client)
        answer = await bed.client.predict("topic", TEXT)
        assert (answer.label, answer.cache_generation) == ("tech", new)
        assert bed.metric("switchyard_cache_tier_entries") == 1  # the old one was retired

    run(redis_server, body)


def test_known_misses_are_kept_and_the_tier_can_be_turned_off(redis_server: RedisServer) -> None:
    client = redis_server.client()
    unseen = "A text no generation holds"

    async def body(bed: Bed) -> None:
        namespace = bed.namespace("topic")
        generation = await bed.publish("topic", {TEXT: "business"}, client)
        assert (await bed.client.predict("topic", unseen)).route == Route.MODEL
        # Written behind the router's back into the same generation: a known miss stays one
        # with the tier on, and is found at once with the tier off.
        client.set(prediction_key(namespace, generation, unseen), prediction("sports").to_json())
        second = await bed.client.predict("topic", unseen)
        if bed.settings.cache_tier_max_entries:
            assert second.route == Route.MODEL
        else:
            assert (second.route, second.label) == (Route.CACHE, "sports")
            assert bed.metric("switchyard_cache_tier_misses_total", task="topic") == 0

    run(redis_server, body)
    run(redis_server, body, cache_tier_max_entries=0)


def test_the_tier_lets_entries_go_when_the_generation_expires(redis_server: RedisServer) -> None:
    client = redis_server.client()

    async def body(bed: Bed) -> None:
        namespace = bed.namespace("topic")
        generation = "expiring"
        client.set(prediction_key(namespace, generation, TEXT), prediction("business").to_json())
        # Started 3599.5 s ago with a TTL of an hour: its keys go in half a second.
        meta = {"created_at": str(time.time() - 3599.5), "ttl_seconds": "3600"}
        client.hset(generation_meta_key(namespace, generation), mapping=meta)
        client.set(generation_key(namespace), generation)
        await bed.cache.refresh_generations()
        assert (await bed.client.predict("topic", TEXT)).route == Route.CACHE
        await bed.client.predict("topic", TEXT)
        assert bed.metric("switchyard_cache_tier_hits_total", task="topic") == 1
        await asyncio.sleep(0.6)
        await bed.client.predict("topic", TEXT)
        assert bed.metric("switchyard_cache_tier_misses_total", task="topic") == 2

    run(redis_server, body)


def test_concurrent_identical_misses_make_one_model_call(redis_server: RedisServer) -> None:
    unseen = "The match opens a new season"

    async def body(bed: Bed) -> None:
        answers = await asyncio.gather(*(bed.client.predict("topic", unseen) for _ in range(8)))
        assert {(a.route, a.label) for a in answers} == {
            (Route.MODEL, fake_label(TOPIC_LABELS, unseen))
        }
        assert [texts for _, _, texts, _ in bed.student.calls] == [[unseen]]
        assert bed.metric("switchyard_model_shared_texts_total", task="topic") == 7
        # Different texts are never merged into one another's call.
        await asyncio.gather(*(bed.client.predict("topic", f"text {i}") for i in range(3)))
        assert len(bed.student.calls) == 4

    # Long enough that all eight arrive while the first call is open, even on a busy machine.
    run(redis_server, body, FakeStudent(delay_s=1.0))


def test_when_the_shared_call_fails_the_waiters_ask_for_themselves(
    redis_server: RedisServer,
) -> None:
    unseen = "The film opens in the autumn"

    async def body(bed: Bed) -> None:
        results = await asyncio.gather(
            *(bed.client.predict("topic", unseen) for _ in range(4)), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        assert len(failed) == 1 and "triton is down" in str(failed[0])
        assert all(r.route == Route.MODEL for r in results if not isinstance(r, BaseException))
        assert len(bed.student.calls) == 2  # the failed one, then the waiters' own

    run(
        redis_server,
        body,
        FakeStudent(delay_s=0.3, failures=[DependencyUnavailable("triton is down")]),
    )


def test_a_request_without_a_deadline_waits_for_the_model_the_triton_timeout_in_all(
    redis_server: RedisServer,
) -> None:
    unseen = "The film opens in the spring"

    async def body(bed: Bed) -> None:
        bounded = asyncio.create_task(bed.client.predict("topic", unseen, timeout_s=0.3))
        await until(lambda: len(bed.student.calls) == 1, seconds=5.0)
        # Waits on the bounded request's call, which ends at its deadline; then asks again.
        async with AsyncRouterClient(bed.address, timeout_s=None, retries=0) as unbounded:
            answer = await unbounded.predict("topic", unseen)
        assert answer.route == Route.MODEL
        assert isinstance((await asyncio.gather(bounded, return_exceptions=True))[0], Exception)
        (_, _, _, first_s), (_, _, _, second_s) = bed.student.calls
        assert first_s <= 0.3
        # What the Triton timeout (1 s) left after the wait on the shared call; not a fresh
        # 1 s, which let such a request end up to a deadline later than it should.
        assert second_s < 1.0 - 0.05

    run(redis_server, body, FakeStudent(delay_s=0.5), triton_timeout_ms=1000)


@pytest.mark.parametrize("flips", [6])
def test_no_answer_mixes_generations_while_flips_land_under_load(
    redis_server: RedisServer, flips: int
) -> None:
    client = redis_server.client()
    texts = [f"cached text {i}" for i in range(8)]

    async def body(bed: Bed) -> None:
        namespace = bed.namespace("topic")
        label_of: dict[str, str] = {}
        stop = asyncio.Event()
        wrong: list[str] = []

        async def read() -> None:
            while not stop.is_set():
                for answer in await bed.client.predict_batch("topic", texts[:4]):
                    expected = label_of.get(answer.cache_generation)
                    if answer.route == Route.CACHE and answer.label != expected:
                        wrong.append(f"{answer.cache_generation}: {answer.label}")

        readers = [asyncio.create_task(read()) for _ in range(4)]
        for flip in range(flips):
            label = TOPIC_LABELS[flip % len(TOPIC_LABELS)]
            generation = publish_generation(
                client, namespace, TOPIC_LABELS, dict.fromkeys(texts, label)
            )
            label_of[generation] = label
            await until(lambda g=generation: bed.cache.generation(namespace) == g)
            await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*readers)
        assert wrong == []
        assert bed.metric("switchyard_cache_tier_hits_total", task="topic") > 0

    run(redis_server, body)


def test_a_waiter_asks_again_only_with_what_its_own_deadline_leaves(
    redis_server: RedisServer,
) -> None:
    unseen = "Prices climb as the match opens"

    async def body(bed: Bed) -> None:
        leader = asyncio.create_task(bed.client.predict("topic", unseen))
        await asyncio.sleep(0.05)
        waiter = await bed.client.predict("topic", unseen, timeout_s=0.8)
        assert waiter.route == Route.MODEL
        with pytest.raises(Exception, match="triton is down"):
            await leader
        (_, _, _, first), (_, _, _, again) = bed.student.calls
        # The shared call failed 0.3 s in; the waiter had about 0.55 s of its 0.8 s left.
        assert first > 4.0 and again < 0.6

    run(
        redis_server,
        body,
        FakeStudent(delay_s=0.3, failures=[DependencyUnavailable("triton is down")]),
    )
