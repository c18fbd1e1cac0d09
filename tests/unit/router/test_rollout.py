"""Rollouts on the request path: the canary's split by a stable hash, answers naming the
version that computed them, a failing candidate handing its texts to the stable version,
bounded shadow calls and their agreement metric, and what ListTasks reports."""

import asyncio
import uuid
from collections import Counter

import pytest
import redis.asyncio

from router.client import Policy
from router.rollout import RolloutRecords
from services.contracts.rollout_schema import Rollout, canary_share, rollout_key
from services.processes.redis_server import RedisServer
from tests.unit.aio import run
from tests.unit.router.conftest import Bed, bed_settings, run_on_bed, until
from tests.unit.router.fakes import FakeStudent

TEXTS = [f"distinct text number {i} about the markets" for i in range(2000)]


def test_a_canary_answers_its_weight_of_the_texts_and_each_text_always_the_same_version(
    redis_server: RedisServer,
) -> None:
    student = FakeStudent(version="2", candidate="3", weight=0.2)

    async def body(bed: Bed) -> None:
        first: dict[str, str] = {}
        for start in range(0, len(TEXTS), 8):
            batch = TEXTS[start : start + 8]
            answers = await bed.client.predict_batch("topic", batch, policy=Policy.MODEL_ONLY)
            first.update((t, a.model_version) for t, a in zip(batch, answers, strict=True))
        shares = Counter(first.values())
        assert set(shares) == {"2", "3"}
        assert 0.17 <= shares["3"] / len(TEXTS) <= 0.23
        # Asked again, one at a time and in other batches, each text gets the same version,
        # and the version that computed each answer is the one the answer names.
        for text in TEXTS[:200:7]:
            answer = await bed.client.predict("topic", text, policy=Policy.MODEL_ONLY)
            assert answer.model_version == first[text]
        calls = Counter(version for _, version, _, _ in student.calls)
        assert set(calls) == {"2", "3"}
        texts = bed.metric(
            "switchyard_model_texts_total", task="topic", model_version="3", role="candidate"
        )
        assert texts == sum(1 for v in first.values() if v == "3") + sum(
            1 for t in TEXTS[:200:7] if first[t] == "3"
        )

    run_on_bed(bed_settings(redis_server.url, max_batch_texts=8), body, student)


def test_the_split_is_a_stable_hash_of_the_normalised_text_per_model() -> None:
    assert canary_share("topic", "Oil  PRICES") == canary_share("topic", "oil prices")
    assert canary_share("topic", "oil prices") != canary_share("sentiment", "oil prices")
    shares = [canary_share("topic", text) for text in TEXTS]
    assert all(0.0 <= share < 1.0 for share in shares)
    assert 0.45 <= sum(share < 0.5 for share in shares) / len(shares) <= 0.55


def test_a_failing_candidate_hands_its_texts_to_the_stable_version(
    redis_server: RedisServer,
) -> None:
    student = FakeStudent(version="2", candidate="3", weight=0.5, failing_versions={"3"})

    async def body(bed: Bed) -> None:
        answers = await bed.client.predict_batch("topic", TEXTS[:8], policy=Policy.MODEL_ONLY)
        assert {answer.model_version for answer in answers} == {"2"}
        errors = bed.metric(
            "switchyard_model_calls_total",
            task="topic",
            model_version="3",
            role="candidate",
            outcome="error",
        )
        assert errors == 1
        asked = [texts for _, version, texts, _ in student.calls if version == "2"]
        assert sorted(text for texts in asked for text in texts) == sorted(TEXTS[:8])

    run_on_bed(bed_settings(redis_server.url), body, student)


def test_shadow_compares_the_candidate_off_the_request_path_and_is_bounded(
    redis_server: RedisServer,
) -> None:
    student = FakeStudent(version="2", candidate="3", shadow=1.0, delay_s=0.05)

    async def body(bed: Bed) -> None:
        answers = await asyncio.gather(
            *(bed.client.predict("topic", text, policy=Policy.MODEL_ONLY) for text in TEXTS[:10])
        )
        # Every client answer is the stable version's; the candidate only shadows.
        assert {answer.model_version for answer in answers} == {"2"}

        def shadowed() -> float:
            return bed.metric(
                "switchyard_shadow_answers_total",
                task="topic",
                model_version="3",
                agreement="agree",
            )

        def dropped() -> float:
            return bed.metric("switchyard_shadow_dropped_total", task="topic")

        # Two shadow calls at most in flight: of ten at once, the rest are dropped.
        await until(lambda: shadowed() + dropped() == 10)
        assert 2 <= shadowed() <= 4
        assert dropped() >= 6

    run_on_bed(bed_settings(redis_server.url, shadow_max_concurrency=2), body, student)


def test_list_tasks_names_the_candidate_and_the_version_problems(
    redis_server: RedisServer,
) -> None:
    problem = "version 4: Triton has not reported it READY for 60 s"
    student = FakeStudent(
        version="2", candidate="3", weight=0.2, shadow=0.1, problems_of={"topic": [problem]}
    )

    async def body(bed: Bed) -> None:
        tasks = {task.task: task for task in await bed.client.list_tasks()}
        topic = tasks["topic"]
        assert (topic.model_version, topic.candidate_version) == ("2", "3")
        assert topic.canary_weight == pytest.approx(0.2)
        assert topic.shadow_share == pytest.approx(0.1)
        assert topic.version_problems == [problem]
        assert tasks["sentiment"].version_problems == []

    run_on_bed(bed_settings(redis_server.url), body, student)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"weight": 1.5, "candidate": "3"}, "weight must be within"),
        ({"weight": 0.2}, "needs a candidate"),
        ({"stable": "two"}, "must be a version number"),
    ],
)
def test_a_rollout_record_is_checked(record: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Rollout(**record)  # type: ignore[arg-type]


def test_a_rollout_record_round_trips_and_a_foreign_one_is_refused() -> None:
    record = Rollout(stable="2", candidate="3", weight=0.2, shadow=0.05, previous="1")
    assert Rollout.from_json(record.to_json()) == record
    for value in (b"{not json", b"[1]", b'{"weight": "lots", "candidate": "3"}'):
        with pytest.raises(ValueError):
            Rollout.from_json(value)


def test_a_malformed_record_keeps_the_last_good_one(redis_server: RedisServer) -> None:
    model = f"records-{uuid.uuid4().hex[:8]}"
    client = redis_server.client()

    async def main() -> None:
        records = RolloutRecords(
            redis.asyncio.Redis.from_url(redis_server.url), 1.0, asyncio.Event()
        )
        try:
            canary = Rollout(stable="1", candidate="3", weight=0.2)
            client.set(rollout_key(model), canary.to_json())
            assert await records.read([model]) == {model: canary}
            client.set(rollout_key(model), b"{half a rec")
            assert await records.read([model]) == {model: canary}
            client.delete(rollout_key(model))
            assert await records.read([model]) == {model: Rollout()}
        finally:
            await records.close()

    run(main)
