"""The cache route on a real six-node Redis Cluster: batches whose keys lie in many slots,
flips heard on a cluster's pub/sub, the misses queue, malformed values; and, on one Redis,
the pointer of the layout before the hash tags, read until the next run flips."""

import asyncio

from router.client import Policy, Route
from services.contracts.cache_schema import (
    CachedPrediction,
    legacy_generation_key,
    misses_stream_key,
    prediction_key,
)
from services.processes.redis_cluster import RedisClusterServers
from services.processes.redis_server import RedisServer
from tests.unit.router.conftest import Bed, bed_settings, run_on_bed, until
from tests.unit.router.fakes import TOPIC_LABELS, fake_label

CACHED = {f"cached text {i} about the markets": TOPIC_LABELS[i % 5] for i in range(64)}


def test_a_batch_over_many_slots_is_read_from_every_master(
    redis_cluster: RedisClusterServers,
) -> None:
    client = redis_cluster.client()

    async def body(bed: Bed) -> None:
        generation = await bed.publish("topic", CACHED, client)
        namespace = bed.namespace("topic")
        keys = [prediction_key(namespace, generation, text) for text in CACHED]
        masters = {client.get_node_from_key(key).name for key in keys}
        assert len(masters) == 3, "a generation's keys spread over every master"
        texts = list(CACHED)
        for start in range(0, len(texts), 8):
            batch = [*texts[start : start + 7], "an uncached text"]
            answers = await bed.client.predict_batch("topic", batch)
            assert [a.route for a in answers] == [Route.CACHE] * 7 + [Route.MODEL]
            assert [a.label for a in answers[:7]] == [CACHED[t] for t in batch[:7]]
            assert {a.cache_generation for a in answers} == {generation}
        variant = await bed.client.predict("topic", "  CACHED text 3 about THE markets ")
        assert (variant.route, variant.label) == (Route.CACHE, CACHED[texts[3]])

    run_on_bed(bed_settings(redis_cluster.url, redis_cluster=True), body)


def test_flips_misses_and_malformed_values_on_a_cluster(
    redis_cluster: RedisClusterServers,
) -> None:
    client = redis_cluster.client()

    async def body(bed: Bed) -> None:
        namespace = bed.namespace("topic")
        first = await bed.publish("topic", CACHED, client)
        # The next generation, heard on the cluster's pub/sub (the poll is slow).
        relabelled = {text: "tech" for text in CACHED}
        second = await bed.publish("topic", relabelled, client)
        assert second != first
        answer = await bed.client.predict("topic", next(iter(CACHED)))
        assert (answer.label, answer.cache_generation) == ("tech", second)
        # A corrupted value is a miss, answered by the model.
        text = list(CACHED)[5]
        client.set(prediction_key(namespace, second, text), b"{not json")
        answer = await bed.client.predict("topic", text)
        assert (answer.route, answer.label) == (Route.MODEL, fake_label(TOPIC_LABELS, text))
        assert bed.metric("switchyard_cache_malformed_values_total", task="topic") == 1
        # Low-confidence model answers reach the misses stream, once each.
        for _ in range(2):
            await bed.client.predict("topic", "unsure text", min_confidence=0.99)
        await until(lambda: client.xlen(misses_stream_key(namespace)) == 1)
        answer = await bed.client.predict("topic", "anything", policy=Policy.MODEL_ONLY)
        assert answer.route == Route.MODEL

    run_on_bed(
        bed_settings(redis_cluster.url, redis_cluster=True, generation_poll_seconds=60.0), body
    )


def test_a_namespace_without_the_new_pointer_is_served_from_the_old_one(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client()

    async def body(bed: Bed) -> None:
        namespace = bed.namespace("topic")
        text = "an answer cached before the upgrade"
        scores = {label: (0.9 if label == "sports" else 0.025) for label in TOPIC_LABELS}
        value = CachedPrediction("sports", scores, "teacher-test", "7", 0.0).to_json()
        client.set(prediction_key(namespace, "old-generation", text), value)
        client.set(legacy_generation_key(namespace), "old-generation")
        await bed.cache.refresh_generations()
        answer = await bed.client.predict("topic", text)
        assert (answer.route, answer.label) == (Route.CACHE, "sports")
        assert answer.cache_generation == "old-generation"
        # The next run's flip writes the new pointer, which wins from then on.
        generation = await bed.publish("topic", {text: "tech"}, client)
        answer = await bed.client.predict("topic", text)
        assert (answer.label, answer.cache_generation) == ("tech", generation)

    run_on_bed(bed_settings(redis_server.url), body)


def test_generation_flips_under_load_on_a_cluster_never_mix_or_fail(
    redis_cluster: RedisClusterServers,
) -> None:
    client = redis_cluster.client()
    texts = list(CACHED)[:16]

    async def body(bed: Bed) -> None:
        label_of: dict[str, str] = {}
        answers: list[list[tuple[str, str, Route]]] = []
        errors: list[BaseException] = []
        done = asyncio.Event()

        async def load(offset: int) -> None:
            while not done.is_set():
                batch = texts[offset : offset + 4]
                try:
                    got = await bed.client.predict_batch("topic", batch)
                except Exception as exc:
                    errors.append(exc)
                    continue
                answers.append([(a.cache_generation, a.label, a.route) for a in got])

        clients = [asyncio.create_task(load(offset)) for offset in (0, 4, 8, 12)]
        for flip in range(8):
            label = TOPIC_LABELS[flip % len(TOPIC_LABELS)]
            generation = await bed.publish("topic", dict.fromkeys(texts, label), client)
            label_of[generation] = label
            await asyncio.sleep(0.2)
        done.set()
        await asyncio.gather(*clients)
        assert errors == []
        cached = [batch for batch in answers if all(r is Route.CACHE for _, _, r in batch)]
        assert len(cached) > 20
        for batch in cached:
            (generation,) = {g for g, _, _ in batch}  # one generation per request
            assert {label for _, label, _ in batch} == {label_of[generation]}

    run_on_bed(bed_settings(redis_cluster.url, redis_cluster=True), body)
