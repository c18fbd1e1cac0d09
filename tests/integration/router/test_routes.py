"""The router's routes and contract, through its real gRPC port, on real Redis and Triton."""

import json
import time
from pathlib import Path

import grpc
import pytest

from router import contract
from router.client import Policy, RequestError, Route
from services.contracts.cache_schema import misses_stream_key, prediction_key
from tests.integration.conftest import RedisServer, RouterProcess, run_switchyard
from tests.integration.router.helpers import (
    client,
    predict,
    publish_generation,
    wait_for_generation,
)

TOPIC_LABELS = ["business", "entertainment", "politics", "sports", "tech"]
CACHED = {
    "Oil prices climb as supply tightens": "business",
    "The festival opens with a new film": "entertainment",
}


@pytest.fixture()
def generation(router: RouterProcess, redis_server: RedisServer) -> str:
    generation = publish_generation(redis_server.client(), "topic", TOPIC_LABELS, CACHED)
    wait_for_generation(router.address, "topic", generation)
    return generation


def test_cache_hit_for_the_text_and_its_variants(router: RouterProcess, generation: str) -> None:
    for text in ("Oil prices climb as supply tightens", "  oil PRICES climb as\tsupply tightens "):
        answer = predict(router.address, "topic", text)
        assert answer.route == Route.CACHE
        assert answer.label == "business"
        assert answer.model == "teacher-test" and answer.model_version == "7"
        assert answer.cache_generation == generation
        assert answer.score == pytest.approx(0.9)
        assert set(answer.scores) == set(TOPIC_LABELS)
        assert answer.server_latency_ms > 0


def test_cache_miss_goes_to_the_student(router: RouterProcess, generation: str) -> None:
    answer = predict(router.address, "topic", "A brand new text nobody cached")
    assert answer.route == Route.MODEL
    assert answer.model == "topic" and answer.model_version == "1"
    assert answer.label in TOPIC_LABELS
    assert sum(answer.scores.values()) == pytest.approx(1.0, abs=1e-4)
    assert answer.score == pytest.approx(max(answer.scores.values()))


def test_policies(router: RouterProcess, generation: str) -> None:
    cached = "The festival opens with a new film"
    only_model = predict(router.address, "topic", cached, Policy.MODEL_ONLY)
    assert only_model.route == Route.MODEL
    only_cache = predict(router.address, "topic", cached, Policy.CACHE_ONLY)
    assert only_cache.route == Route.CACHE
    with pytest.raises(RequestError) as error:
        predict(router.address, "topic", "not cached at all", Policy.CACHE_ONLY)
    assert error.value.code == grpc.StatusCode.NOT_FOUND
    assert "not in the cache of task 'topic'" in error.value.details


def test_batch_mixes_hits_and_misses_in_order(router: RouterProcess, generation: str) -> None:
    texts = [
        "uncached one",
        "Oil prices climb as supply tightens",
        "uncached two",
        "The festival opens with a new film",
    ]
    with client(router.address) as router_client:
        results = router_client.predict_batch("topic", texts)
    routes = [result.route for result in results]
    assert routes == [
        Route.MODEL,
        Route.CACHE,
        Route.MODEL,
        Route.CACHE,
    ]
    assert results[1].label == "business"
    assert results[3].label == "entertainment"
    single = predict(router.address, "topic", "uncached two", Policy.MODEL_ONLY)
    assert results[2].scores == pytest.approx(single.scores, abs=1e-5)


def test_generation_flip_is_seen_without_restart(
    router: RouterProcess, redis_server: RedisServer, generation: str
) -> None:
    text = "Oil prices climb as supply tightens"
    assert predict(router.address, "topic", text).label == "business"
    newer = publish_generation(redis_server.client(), "topic", TOPIC_LABELS, {text: "politics"})
    wait_for_generation(router.address, "topic", newer)
    answer = predict(router.address, "topic", text)
    assert (answer.label, answer.cache_generation) == ("politics", newer)


def test_low_confidence_answers_reach_the_stream_once(
    router: RouterProcess, redis_server: RedisServer
) -> None:
    client = redis_server.client()
    stream = misses_stream_key("sentiment")
    before = client.xlen(stream)
    for _ in range(3):
        predict(router.address, "sentiment", "meh, whatever happens happens", min_confidence=0.999)
    entries = []
    for _ in range(50):
        entries = client.xrange(stream)
        if len(entries) > before:
            break
        time.sleep(0.05)
    time.sleep(0.3)  # the other two requests must not add entries
    assert client.xlen(stream) == before + 1
    assert entries[-1][1][b"text"] == b"meh, whatever happens happens"


def test_malformed_cache_values_are_misses(
    router: RouterProcess, redis_server: RedisServer, generation: str
) -> None:
    text = "a value somebody else wrote"
    redis_server.client().set(prediction_key("topic", generation, text), b"\x00not json")
    assert predict(router.address, "topic", text).route == Route.MODEL


def test_list_tasks(router: RouterProcess, tiny_build: Path) -> None:
    with client(router.address) as router_client:
        tasks = {t.task: t for t in router_client.list_tasks()}
    assert sorted(tasks) == ["sentiment", "topic"]
    labels = json.loads((tiny_build / "model_repository/sentiment/1/labels.json").read_text())
    assert tasks["sentiment"].labels == labels
    assert tasks["topic"].model == "topic" and tasks["topic"].model_version == "1"
    assert tasks["sentiment"].max_text_length == 280
    assert (tasks["topic"].candidate_version, tasks["topic"].version_problems) == ("", [])
    # The same, as an operator reads it.
    shown = run_switchyard("router", "tasks", "--address", router.address).stdout
    assert "topic v1" in shown and "sentiment v1" in shown


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"task": "weather", "text": "sunny"}, "unknown task 'weather'; known tasks: sentiment"),
        ({"task": "topic", "text": ""}, "text is empty"),
        ({"task": "topic", "text": " \n\t "}, "text is empty"),
        ({"task": "sentiment", "text": "x" * 281}, "281 characters; the limit for task"),
        ({"task": "topic", "text": "fine", "policy": 9}, "unknown policy 9"),
        ({"task": "topic", "text": "fine", "min_confidence": 1.5}, "must be within [0, 1]"),
    ],
)  # fmt: skip
def test_invalid_requests(
    router: RouterProcess, request_fields: dict[str, object], message: str
) -> None:
    # Raw messages: the client cannot send an unknown policy, but another client can.
    request = contract.PredictRequest(**request_fields)  # type: ignore[arg-type]
    with grpc.insecure_channel(router.address) as channel, pytest.raises(grpc.RpcError) as error:
        contract.RouterStub(channel).Predict(request, timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.value.details()


def test_too_many_texts(router: RouterProcess) -> None:
    with client(router.address) as router_client, pytest.raises(RequestError) as error:
        router_client.predict_batch("topic", ["t"] * 9)
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "9 texts in one request; the limit is 8" in error.value.details


def test_deadline_exceeded(router: RouterProcess) -> None:
    with client(router.address) as router_client, pytest.raises(RequestError) as error:
        router_client.predict("topic", "a deadline nobody can meet", timeout_s=0.0005)
    assert error.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
