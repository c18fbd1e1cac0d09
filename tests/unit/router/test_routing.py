"""The routing decision through the router's real gRPC port: validation, the cache route on a
real redis-server, the model route (a stand-in student), policies, the misses queue, metrics."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from router import contract
from router.client import Policy, RequestError, Route
from services.contracts.cache_schema import (
    miss_day,
    misses_count_key,
    misses_seen_key,
    misses_stream_key,
    prediction_key,
    quality_record_key,
    quality_samples_key,
    top_misses_key,
)
from services.contracts.quality_schema import QualityRecord, QualitySample, VersionAgreement
from services.processes.redis_server import RedisServer
from tests.unit.router.conftest import Bed, bed_settings, run_on_bed
from tests.unit.router.fakes import TOPIC_LABELS, fake_label

CACHED = {
    "Oil prices climb as supply tightens": "business",
    "The festival opens with a new film": "entertainment",
}
Body = Callable[[Bed], Awaitable[None]]


def run(redis_server: RedisServer, body: Body, **settings: Any) -> None:
    run_on_bed(bed_settings(redis_server.url, **settings), body)


def test_a_cached_text_and_its_variants_come_from_the_cache(redis_server: RedisServer) -> None:
    async def body(bed: Bed) -> None:
        generation = await bed.publish("topic", CACHED, redis_server.client())
        for text in (
            "Oil prices climb as supply tightens",
            "  oil PRICES climb as\tsupply tightens ",
        ):
            answer = await bed.client.predict("topic", text)
            assert (answer.route, answer.label) == (Route.CACHE, "business")
            assert (answer.model, answer.model_version) == ("teacher-test", "7")
            assert answer.cache_generation == generation
            assert answer.score == pytest.approx(0.9)
            assert set(answer.scores) == set(TOPIC_LABELS)
            assert answer.server_latency_ms > 0
        assert bed.student.calls == []
        assert bed.metric("switchyard_cache_hits_total", task="topic") == 2

    run(redis_server, body)


def test_a_miss_goes_to_the_student_with_the_generation_consulted(
    redis_server: RedisServer,
) -> None:
    async def body(bed: Bed) -> None:
        generation = await bed.publish("topic", CACHED, redis_server.client())
        text = "A brand new text nobody cached"
        answer = await bed.client.predict("topic", text)
        assert answer.route == Route.MODEL
        assert (answer.model, answer.model_version) == ("topic", "3")
        assert answer.label == fake_label(TOPIC_LABELS, text)
        assert answer.cache_generation == generation
        assert sum(answer.scores.values()) == pytest.approx(1.0)
        assert bed.metric("switchyard_cache_misses_total", task="topic") == 1

    run(redis_server, body)


def test_a_batch_asks_the_student_for_the_misses_only_and_keeps_the_order(
    redis_server: RedisServer,
) -> None:
    async def body(bed: Bed) -> None:
        await bed.publish("topic", CACHED, redis_server.client())
        texts = ["uncached one", *CACHED, "uncached two"]
        answers = await bed.client.predict_batch("topic", texts)
        assert [a.route for a in answers] == [Route.MODEL, Route.CACHE, Route.CACHE, Route.MODEL]
        assert [a.label for a in answers[1:3]] == ["business", "entertainment"]
        assert [texts for _, _, texts, _ in bed.student.calls] == [["uncached one", "uncached two"]]

    run(redis_server, body)


def test_policies(redis_server: RedisServer) -> None:
    async def body(bed: Bed) -> None:
        generation = await bed.publish("topic", CACHED, redis_server.client())
        cached = "The festival opens with a new film"
        only_model = await bed.client.predict("topic", cached, policy=Policy.MODEL_ONLY)
        assert only_model.route == Route.MODEL
        assert only_model.cache_generation == ""
        only_cache = await bed.client.predict("topic", cached, policy=Policy.CACHE_ONLY)
        assert (only_cache.route, only_cache.label) == (Route.CACHE, "entertainment")
        with pytest.raises(RequestError) as error:
            await bed.client.predict("topic", "not cached at all", policy=Policy.CACHE_ONLY)
        assert error.value.code == grpc.StatusCode.NOT_FOUND
        assert error.value.details == (
            f"1 of 1 texts are not in the cache of task 'topic' (generation {generation})"
        )

    run(redis_server, body)


def test_without_a_generation_every_text_goes_to_the_model(redis_server: RedisServer) -> None:
    async def body(bed: Bed) -> None:
        answer = await bed.client.predict("sentiment", "meh")
        assert (answer.route, answer.cache_generation) == (Route.MODEL, "")
        with pytest.raises(RequestError) as error:
            await bed.client.predict("sentiment", "meh", policy=Policy.CACHE_ONLY)
        assert "(generation none)" in error.value.details

    run(redis_server, body)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (("weather", ["sunny"]), "unknown task 'weather'; known tasks: sentiment, topic"),
        (("topic", [""]), "text is empty"),
        (("topic", [" \n\t "]), "text is empty"),
        (("topic", ["fine", " "]), "text 1 is empty"),
        (("sentiment", ["x" * 281]), "text has 281 characters; the limit for task 'sentiment'"),
        (("topic", ["t"] * 9), "9 texts in one request; the limit is 8"),
        (("topic", []), "no text given"),
        (("t" * 1000, ["x"]), "unknown task '" + "t" * 64 + "...'"),
    ],
)  # fmt: skip
def test_invalid_requests_name_the_problem(
    redis_server: RedisServer, call: tuple[str, list[str]], message: str
) -> None:
    async def body(bed: Bed) -> None:
        task, texts = call
        with pytest.raises(RequestError) as error:
            await bed.client.predict_batch(task, texts)
        assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert message in error.value.details
        assert bed.student.calls == []

    run(redis_server, body)


def test_min_confidence_outside_0_1_is_invalid(redis_server: RedisServer) -> None:
    async def body(bed: Bed) -> None:
        for value in (1.5, -0.1, float("nan")):
            with pytest.raises(RequestError) as error:
                await bed.client.predict("topic", "fine", min_confidence=value)
            assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert "min_confidence must be within [0, 1]" in error.value.details

    run(redis_server, body)


def test_raw_requests_an_app_client_cannot_send(redis_server: RedisServer) -> None:
    """Another client may send an undefined policy or bytes that are no message at all."""

    async def body(bed: Bed) -> None:
        async with grpc.aio.insecure_channel(bed.address) as channel:
            stub = contract.RouterStub(channel)
            request = contract.PredictRequest(task="topic", text="fine")
            request.policy = 9  # type: ignore[assignment]
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await stub.Predict(request)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "unknown policy 9; use 0-3" in (error.value.details() or "")
            raw = channel.unary_unary(f"/{contract.SERVICE}/PredictBatch")
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await raw(b"\x0a\x05topic\x12\x03\xed\xa0\x80")
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "not a valid switchyard.v1.PredictBatchRequest" in (error.value.details() or "")
        code = "INVALID_ARGUMENT"
        assert bed.metric("switchyard_requests_total", method="Predict", task="topic",
                          route="none", code=code) == 1  # fmt: skip
        assert bed.metric("switchyard_requests_total", method="PredictBatch", task="unknown",
                          route="none", code=code) == 1  # fmt: skip

    run(redis_server, body)


def test_low_confidence_answers_are_queued_once(redis_server: RedisServer) -> None:
    async def body(bed: Bed) -> None:
        text = "meh, whatever happens happens"
        for _ in range(3):
            await bed.client.predict("sentiment", text, min_confidence=0.95)
        await bed.client.predict("sentiment", "a sure one")  # 0.9 >= the threshold 0.6
        await bed.router.drain()
        stream = misses_stream_key(bed.namespace("sentiment"))
        entries = redis_server.client().xrange(stream)
        assert [fields[b"text"] for _, fields in entries] == [text.encode()]
        assert redis_server.client().scard(misses_seen_key(bed.namespace("sentiment"))) == 1
        assert bed.metric("switchyard_misses_queued_total", task="sentiment") == 1

    run(redis_server, body)


def test_model_route_answers_are_sampled_for_scoring_and_cache_hits_never(
    redis_server: RedisServer,
) -> None:
    async def body(bed: Bed) -> None:
        await bed.publish("topic", CACHED, redis_server.client())
        await bed.client.predict("topic", "Oil prices climb as supply tightens")  # cached
        texts = ["a match tonight", "a vote tomorrow"]
        answers = await bed.client.predict_batch("topic", texts)
        await bed.router.drain()
        entries = redis_server.client().xrange(quality_samples_key(bed.namespace("topic")))
        samples = [QualitySample.from_fields(fields) for _, fields in entries]
        assert [s.text for s in samples] == texts
        for sample, answer in zip(samples, answers, strict=True):
            assert (sample.label, sample.model, sample.model_version) == (
                answer.label, answer.model, answer.model_version,
            )  # fmt: skip
            assert sample.scores == pytest.approx(answer.scores)
        assert bed.metric("switchyard_quality_samples_total", task="topic") == 2

    run(redis_server, body, quality_sample_rate=1.0)


def test_no_sample_is_recorded_at_rate_zero(redis_server: RedisServer) -> None:
    async def body(bed: Bed) -> None:
        await bed.client.predict("topic", "a match tonight")
        await bed.router.drain()
        assert redis_server.client().xlen(quality_samples_key(bed.namespace("topic"))) == 0

    run(redis_server, body, quality_sample_rate=0.0)


def test_the_last_quality_record_is_exported_and_stale_versions_disappear(
    redis_server: RedisServer,
) -> None:
    async def body(bed: Bed) -> None:
        namespace = bed.namespace("topic")
        client = redis_server.client()
        assert await bed.cache.quality_record(namespace) is None
        client.set(quality_record_key(namespace), b"{not a record")
        assert await bed.cache.quality_record(namespace) is None  # unreadable: ignored
        first = QualityRecord("topic", "t:1", 1.0, [VersionAgreement("topic", "1", 10, 8)])
        client.set(quality_record_key(namespace), first.to_json())
        bed.router.metrics.show_quality("topic", await bed.cache.quality_record(namespace))
        labels = {"task": "topic", "model_version": "1"}
        assert bed.metric("switchyard_quality_student_agreement", **labels) == 0.8
        assert bed.metric("switchyard_quality_student_agreement_low", **labels) == pytest.approx(
            0.4902, abs=1e-4
        )
        assert bed.metric("switchyard_quality_scored_samples", **labels) == 10
        later = QualityRecord("topic", "t:1", 2.0, [VersionAgreement("topic", "2", 50, 45)])
        client.set(quality_record_key(namespace), later.to_json())
        bed.router.metrics.show_quality("topic", await bed.cache.quality_record(namespace))
        assert bed.registry.get_sample_value("switchyard_quality_student_agreement", labels) is None
        assert (
            bed.metric("switchyard_quality_student_agreement", task="topic", model_version="2")
            == 0.9
        )

    run(redis_server, body)


def test_uncached_texts_are_counted_by_day_and_the_days_set_stays_bounded(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client()

    async def body(bed: Bed) -> None:
        await bed.publish("topic", CACHED, client)
        for text in ["Rare one", "hot text", "HOT  text", next(iter(CACHED)), "hot text", "x"]:
            await bed.client.predict("topic", text)
        await bed.client.predict("topic", "asked of the model only", policy=Policy.MODEL_ONLY)
        (counts,) = bed.router.miss_counts.take()
        namespace = bed.namespace("topic")
        # A hit and a MODEL_ONLY request (which skips the cache) are not misses.
        assert (counts.namespace, counts.texts, counts.total) == (
            namespace,
            {"hot text": 3, "rare one": 1, "x": 1},
            5,
        )
        now = time.time()
        await bed.cache.count_misses(namespace, counts.texts, counts.total, now, capacity=2)
        top = top_misses_key(namespace, miss_day(now))
        assert client.zrange(top, 0, -1, withscores=True) == [
            (b"rare one", 1.0), (b"x", 1.0), (b"hot text", 3.0),
        ]  # fmt: skip
        assert client.get(misses_count_key(namespace, miss_day(now))) == b"5"
        assert 0 < client.ttl(top) <= 8 * 86400
        # Past twice the capacity: cut back to the capacity's most frequent.
        more = {"hot text": 1, "y": 1, "z": 2}
        await bed.cache.count_misses(namespace, more, 4, now, capacity=2)
        assert client.zrange(top, 0, -1, withscores=True) == [(b"z", 2.0), (b"hot text", 4.0)]
        assert client.get(misses_count_key(namespace, miss_day(now))) == b"9"

    run(redis_server, body)


def test_the_task_threshold_decides_without_min_confidence(redis_server: RedisServer) -> None:
    async def body(bed: Bed) -> None:
        bed.student.score = 0.5
        await bed.client.predict("topic", "an unsure answer")
        await bed.router.drain()
        stream = misses_stream_key(bed.namespace("topic"))
        assert redis_server.client().xlen(stream) == 1

    run(redis_server, body)


def test_malformed_and_foreign_cache_values_are_misses_and_counted(
    redis_server: RedisServer,
) -> None:
    async def body(bed: Bed) -> None:
        client = redis_server.client()
        generation = await bed.publish("topic", CACHED, client)
        namespace = bed.namespace("topic")
        values = {
            "not json at all": b"\x00not json",
            "deeply nested": b"[" * 10_000,
            "a score of seven": b'{"label": "politics", "scores": {"politics": 7}, "model": "m",'
            b' "model_version": "1", "created_at": 0}',
            "labels of another task": b'{"label": "positive", "scores": {"positive": 1.0},'
            b' "model": "m", "model_version": "1", "created_at": 0}',
        }
        for text, value in values.items():
            client.set(prediction_key(namespace, generation, text), value)
        answers = await bed.client.predict_batch("topic", list(values))
        assert {answer.route for answer in answers} == {Route.MODEL}
        assert bed.metric("switchyard_cache_malformed_values_total", task="topic") == 4

    run(redis_server, body)


def test_a_flip_is_followed_and_one_request_never_mixes_generations(
    redis_server: RedisServer,
) -> None:
    async def body(bed: Bed) -> None:
        client = redis_server.client()
        texts = list(CACHED)
        await bed.publish("topic", dict.fromkeys(texts, "politics"), client)
        newer = await bed.publish("topic", dict.fromkeys(texts, "tech"), client)
        answers = await bed.client.predict_batch("topic", texts)
        assert {(a.label, a.cache_generation) for a in answers} == {("tech", newer)}

    run(redis_server, body)


def test_list_tasks_describes_each_task(redis_server: RedisServer) -> None:
    async def body(bed: Bed) -> None:
        generation = await bed.publish("topic", CACHED, redis_server.client())
        tasks = {info.task: info for info in await bed.client.list_tasks()}
        assert sorted(tasks) == ["sentiment", "topic"]
        topic = tasks["topic"]
        assert (topic.labels, topic.model, topic.model_version) == (TOPIC_LABELS, "topic", "3")
        assert topic.cache_generation == generation
        assert tasks["sentiment"].cache_generation == ""
        assert tasks["sentiment"].max_text_length == 280
        assert topic.confidence_threshold == pytest.approx(0.6)

    run(redis_server, body)


def test_a_stalled_redis_uses_up_the_deadline_and_the_model_is_not_asked(tmp_path: Path) -> None:
    private = RedisServer(tmp_path)
    private.start()

    async def body(bed: Bed) -> None:
        await bed.publish("topic", CACHED, private.client())
        private.pause(True)
        try:
            with pytest.raises(RequestError) as error:
                await bed.client.predict("topic", "too late for anything", timeout_s=0.03)
        finally:
            private.pause(False)
        assert error.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert bed.student.calls == []

    try:
        run_on_bed(bed_settings(private.url, redis_timeout_ms=1000.0), body)
    finally:
        private.stop()


def test_redis_down_the_model_answers_and_cache_only_is_unavailable(tmp_path: Path) -> None:
    # A Redis of its own, saving its data on shutdown so that a restart keeps the generation.
    private = RedisServer(tmp_path, persistent=True)
    private.start()

    async def body(bed: Bed) -> None:
        await bed.publish("topic", CACHED, private.client())
        private.stop()
        for _ in range(3):
            answer = await bed.client.predict("topic", "Oil prices climb as supply tightens")
            # The cache was not read: the answer names no generation.
            assert (answer.route, answer.cache_generation) == (Route.MODEL, "")
        with pytest.raises(RequestError) as error:
            await bed.client.predict("topic", "anything", policy=Policy.CACHE_ONLY)
        assert error.value.code == grpc.StatusCode.UNAVAILABLE
        assert "redis" in error.value.details
        assert bed.metric("switchyard_cache_errors_total", task="topic") == 4
        assert not await bed.cache.ping()
        private.start()
        # The open breaker lets a trial call through after its reset time; hits come back.
        await asyncio.sleep(0.35)
        answer = await bed.client.predict("topic", "Oil prices climb as supply tightens")
        assert answer.route == Route.CACHE

    try:
        run_on_bed(bed_settings(private.url, breaker_failures=2), body)
    finally:
        private.stop()
