"""The model route's client of Triton, against an in-process server of Triton's gRPC protocol:
which version it serves, how texts become tensors, and how Triton's failures become domain
errors (a deadline by its status code, never by the words of a message)."""

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import numpy as np
import pytest

from router.errors import DeadlineExceeded, DependencyUnavailable
from router.model import StudentClient
from services.contracts.model_io import TextEncoder, softmax
from services.contracts.model_repository import ModelVersion
from services.contracts.rollout_schema import Rollout
from services.processes.ports import free_port
from tests.unit.aio import run as run_async
from tests.unit.router.fakes import (
    SENTIMENT_LABELS,
    FakeTriton,
    fake_logits,
    serving_triton,
    write_model_repository,
)

Body = Callable[[FakeTriton, StudentClient], Awaitable[None]]


def run(tmp_path: Path, body: Body, served: tuple[str, ...] = ("1", "3")) -> None:
    repository = write_model_repository(tmp_path / "repository")

    async def main() -> None:
        async with serving_triton(served) as (triton, address):
            student = StudentClient(address, repository, timeout_s=2.0, buckets=[4, 8, 16])
            try:
                await student.load(["topic", "sentiment"])
                await body(triton, student)
            finally:
                await student.close()

    run_async(main)


def test_the_newest_version_triton_serves_is_used(tmp_path: Path) -> None:
    async def body(triton: FakeTriton, student: StudentClient) -> None:
        assert student.model("topic").version == "1"
        assert student.model("sentiment").labels == SENTIMENT_LABELS

    run(tmp_path, body, served=("1",))


def test_answers_come_from_the_served_logits(tmp_path: Path) -> None:
    texts = ["oil prices climb", "the film opens a match"]

    async def body(triton: FakeTriton, student: StudentClient) -> None:
        answers = await student.classify(student.model("sentiment"), texts, timeout_s=5.0)
        (request,) = triton.requests
        assert (request.model_name, request.model_version) == ("sentiment", "3")
        assert [tensor.name for tensor in request.inputs] == ["input_ids", "attention_mask"]
        assert list(request.inputs[0].shape) == [2, 8]  # 5 tokens, padded to the 8 bucket
        files = ModelVersion.of(tmp_path / "repository", "sentiment", "3")
        ids = TextEncoder.from_file(files.tokenizer_file, ["input_ids"]).encode(texts, [4, 8])
        expected = softmax(fake_logits(ids["input_ids"], 3))
        for answer, row in zip(answers, expected, strict=True):
            assert answer.label == SENTIMENT_LABELS[int(np.argmax(row))]
            assert answer.score == pytest.approx(float(row.max()))
            assert list(answer.scores.values()) == pytest.approx(list(row))
        assert await student.is_ready(["topic", "sentiment"])
        assert not await student.is_ready(["weather"])

    run(tmp_path, body)


def test_a_request_over_the_models_max_batch_is_split_and_keeps_its_order(
    tmp_path: Path,
) -> None:
    """The config's max_batch_size (32) bounds every call: Triton refuses a bigger batch."""
    words = ["oil", "prices", "climb", "the", "film", "opens", "a", "match"]
    texts = [" ".join(words[: 1 + i % len(words)]) for i in range(70)]

    async def body(triton: FakeTriton, student: StudentClient) -> None:
        model = student.model("sentiment")
        assert model.max_batch == 32
        answers = await student.classify(model, texts, timeout_s=5.0)
        assert [r.inputs[0].shape[0] for r in triton.requests] == [32, 32, 6]
        alone = [await student.classify(model, [text], timeout_s=5.0) for text in texts]
        assert answers == [answer for (answer,) in alone]

    run(tmp_path, body)


def test_concurrent_requests_share_calls_once_every_slot_is_busy(tmp_path: Path) -> None:
    async def body(triton: FakeTriton, student: StudentClient) -> None:
        triton.delay_s = 0.05
        model = student.model("topic")
        texts = [f"oil {'prices ' * (i % 3)}climb" for i in range(40)]
        answers = await asyncio.gather(
            *(student.classify(model, [text], timeout_s=5.0) for text in texts)
        )
        # Four calls in flight per replica: the first four texts leave alone, the other 36
        # wait for the next free slots and leave together.
        assert 4 < len(triton.requests) <= 12
        triton.delay_s = 0.0
        for text, (answer,) in zip(texts, answers, strict=True):
            assert [answer] == await student.classify(model, [text], timeout_s=5.0)

    run(tmp_path, body)


def test_a_deadline_status_from_triton_is_deadline_exceeded(tmp_path: Path) -> None:
    async def body(triton: FakeTriton, student: StudentClient) -> None:
        triton.fail_with = grpc.StatusCode.DEADLINE_EXCEEDED
        with pytest.raises(DeadlineExceeded, match="did not answer within"):
            await student.classify(student.model("topic"), ["oil"], timeout_s=5.0)

    run(tmp_path, body)


def test_a_slow_triton_is_cut_at_the_budget(tmp_path: Path) -> None:
    async def body(triton: FakeTriton, student: StudentClient) -> None:
        triton.delay_s = 1.0
        with pytest.raises(DeadlineExceeded, match="within 50 ms"):
            await student.classify(student.model("topic"), ["oil"], timeout_s=0.05)
        with pytest.raises(DeadlineExceeded, match="ran out before the model could be called"):
            await student.classify(student.model("topic"), ["oil"], timeout_s=0.0)

    run(tmp_path, body)


def test_other_failures_are_unavailable_whatever_the_message_says(tmp_path: Path) -> None:
    async def body(triton: FakeTriton, student: StudentClient) -> None:
        for code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE):
            triton.fail_with = code
            with pytest.raises(DependencyUnavailable, match="triton could not run the model"):
                await student.classify(student.model("topic"), ["oil"], timeout_s=5.0)

    run(tmp_path, body)


def test_without_triton_the_repository_decides_and_calls_are_unavailable(
    tmp_path: Path,
) -> None:
    repository = write_model_repository(tmp_path / "repository", versions=("2", "10"))

    async def main() -> None:
        student = StudentClient(f"127.0.0.1:{free_port()}", repository, 1.0, [16])
        try:
            await student.load(["topic"])
            assert student.model("topic").version == "10"  # numerically newest
            assert not await student.is_ready(["topic"])
            with pytest.raises(DependencyUnavailable):
                await student.classify(student.model("topic"), ["oil"], timeout_s=1.0)
        finally:
            await student.close()

    run_async(main)


def test_a_model_without_versions_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty" / "topic").mkdir(parents=True)

    async def main() -> None:
        student = StudentClient(f"127.0.0.1:{free_port()}", tmp_path / "empty", 1.0, [16])
        try:
            with pytest.raises(FileNotFoundError, match="no version of model 'topic'"):
                await student.load(["topic"])
        finally:
            await student.close()

    run_async(main)


def _break_tokenizer(repository: Path, version: str) -> None:
    (repository / "topic" / version / "tokenizer.json").write_text("{not a tokenizer")


def test_versions_follow_the_rollout_record_and_only_ready_loadable_ones_serve(
    tmp_path: Path,
) -> None:
    repository = write_model_repository(tmp_path / "repository", versions=("1", "3", "4"))

    async def main() -> None:
        async with serving_triton(["1", "3"]) as (triton, address):
            student = StudentClient(address, repository, 2.0, [16], ready_timeout_s=0.0)
            try:
                await student.load(["topic", "sentiment"])
                assert student.serving("topic").versions == ("3", "", 0.0, 0.0)
                # A pin, then a canary beside it; the answers' version is each call's own.
                await student.follow_versions({"topic": Rollout(stable="1")})
                assert student.serving("topic").versions == ("1", "", 0.0, 0.0)
                canary = Rollout(stable="1", candidate="3", weight=0.2, shadow=0.1)
                changes = await student.follow_versions({"topic": canary})
                assert [(c.model, c.problem) for c in changes] == [("topic", False)]
                serving = student.serving("topic")
                assert serving.versions == ("1", "3", 0.2, 0.1)
                assert serving.candidate is not None
                await student.classify(serving.candidate, ["oil"], timeout_s=2.0)
                assert triton.requests[-1].model_version == "3"
                # Version 4 is in the repository but Triton does not serve it: never used,
                # and reported (once) when it is wanted.
                changes = await student.follow_versions(
                    {"topic": Rollout(candidate="4", weight=0.5, stable="1")}
                )
                assert [(c.version, c.problem) for c in changes if c.model == "topic"] == [
                    ("4", True),
                    ("1", False),
                ]
                assert "READY" in changes[0].description
                assert student.serving("topic").versions == ("1", "", 0.0, 0.0)
                again = await student.follow_versions(
                    {"topic": Rollout(candidate="4", weight=0.5, stable="1")}
                )
                assert [c for c in again if c.model == "topic"] == []
                assert student.problems("topic") == [
                    "version 4: Triton has not reported it READY for 0 s"
                ]
                # A pin of a version missing from the repository keeps what serves; a
                # candidate whose files do not load is left out.
                changes = await student.follow_versions({"topic": Rollout(stable="9")})
                assert [(c.version, c.problem) for c in changes if c.model == "topic"] == [
                    ("9", True)
                ]
                assert "not in the model repository" in changes[0].description
                assert student.serving("topic").versions == ("1", "", 0.0, 0.0)
                _break_tokenizer(repository, "4")
                triton.served_versions = ["1", "3", "4"]
                broken = Rollout(stable="3", candidate="4", weight=0.5)
                changes = await student.follow_versions({"topic": broken})
                assert [(c.version, c.problem) for c in changes if c.model == "topic"] == [
                    ("4", True),
                    ("3", False),
                ]
                assert "files do not load" in changes[0].description
                assert student.serving("topic").versions == ("3", "", 0.0, 0.0)
                # Without a record: the newest version that serves, never the broken one;
                # mended (its folder changed), it serves and its problem clears.
                await student.follow_versions({})
                assert student.serving("topic").versions == ("3", "", 0.0, 0.0)
                shutil.rmtree(repository / "topic" / "4")
                shutil.copytree(repository / "topic" / "3", repository / "topic" / "4")
                await student.follow_versions({})
                assert student.serving("topic").versions == ("4", "", 0.0, 0.0)
                assert student.problems("topic") == []
            finally:
                await student.close()

    run_async(main)


def test_a_pinned_version_triton_released_gives_way_to_a_served_one(tmp_path: Path) -> None:
    repository = write_model_repository(tmp_path / "repository", versions=("1", "3"))

    async def main() -> None:
        async with serving_triton(["1", "3"]) as (triton, address):
            student = StudentClient(address, repository, 2.0, [16], ready_timeout_s=60.0)
            try:
                await student.load(["topic"])
                await student.follow_versions({"topic": Rollout(stable="1")})
                assert student.model("topic").version == "1"
                triton.served_versions = ["3"]
                # Not READY for less than the timeout: no problem yet, but no request may go
                # to a version Triton no longer serves.
                changes = await student.follow_versions({"topic": Rollout(stable="1")})
                assert [(c.version, c.problem) for c in changes] == [("3", False)]
                assert student.model("topic").version == "3"
                assert student.problems("topic") == []
            finally:
                await student.close()

    run_async(main)


def test_a_start_during_a_bad_rollout_serves_the_newest_version_that_loads(
    tmp_path: Path,
) -> None:
    repository = write_model_repository(tmp_path / "repository", versions=("1", "3"))
    _break_tokenizer(repository, "3")

    async def main() -> None:
        async with serving_triton(["1", "3"]) as (_, address):
            student = StudentClient(address, repository, 2.0, [16], ready_timeout_s=60.0)
            try:
                await student.load(["topic"])
                assert student.model("topic").version == "1"
                changes = await student.follow_versions({})
                assert [(c.version, c.problem) for c in changes] == [("3", True)]
                assert "files do not load" in student.problems("topic")[0]
                _break_tokenizer(repository, "1")
                with pytest.raises(ValueError, match="no version of model 'topic' loads"):
                    await student.load(["topic"])
            finally:
                await student.close()

    run_async(main)


def test_a_readiness_check_that_times_out_moves_no_pin_and_ends_no_canary(
    tmp_path: Path,
) -> None:
    repository = write_model_repository(tmp_path / "repository", versions=("1", "3"))

    async def main() -> None:
        async with serving_triton(["1", "3"]) as (triton, address):
            student = StudentClient(address, repository, 2.0, [16], ready_timeout_s=60.0)
            try:
                await student.load(["topic"])
                canary = Rollout(stable="1", candidate="3", weight=0.1)
                await student.follow_versions({"topic": canary})
                assert student.serving("topic").versions == ("1", "3", 0.1, 0.0)
                triton.ready_delay_s = 3.0  # slower than the 2 s a check may take
                assert await student.follow_versions({"topic": canary}) == []
                assert student.serving("topic").versions == ("1", "3", 0.1, 0.0)
            finally:
                await student.close()

    run_async(main)


def test_a_triton_url_that_names_no_triton_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="names no Triton"):
        StudentClient(" , ", tmp_path, 1.0, [16])
