"""The public client against the in-process router: typed answers, sync and asyncio, retries
of UNAVAILABLE, deadlines, and the one mapping between the wire enums and Policy/Route."""

import asyncio
from pathlib import Path

import grpc
import pytest

from router import contract
from router.client import (
    AsyncRouterClient,
    Policy,
    Prediction,
    RequestError,
    Route,
    RouterClient,
    TlsConfig,
)
from router.errors import DependencyUnavailable
from services.processes.redis_server import RedisServer
from tests.unit.router.conftest import Bed, bed_settings, run_on_bed
from tests.unit.router.fakes import SENTIMENT_LABELS, FakeStudent, fake_label


def test_unavailable_is_retried_as_often_as_asked(redis_server: RedisServer) -> None:
    async def body(bed: Bed) -> None:
        async with AsyncRouterClient(bed.address, retries=2) as client:
            answer = await client.predict("sentiment", "third time lucky")
        assert answer.label == fake_label(SENTIMENT_LABELS, "third time lucky")
        assert len(bed.student.calls) == 3

    down = [DependencyUnavailable("triton is down"), DependencyUnavailable("triton is down")]
    run_on_bed(bed_settings(redis_server.url), body, FakeStudent(failures=down))


def test_without_retries_unavailable_reaches_the_app(redis_server: RedisServer) -> None:
    async def body(bed: Bed) -> None:
        with pytest.raises(RequestError) as error:
            await bed.client.predict("sentiment", "no second chance")
        assert error.value.code == grpc.StatusCode.UNAVAILABLE
        assert str(error.value) == "UNAVAILABLE: triton is down"
        assert len(bed.student.calls) == 1

    student = FakeStudent(failures=[DependencyUnavailable("triton is down")])
    run_on_bed(bed_settings(redis_server.url), body, student)


def test_the_blocking_client_gives_the_same_answers(redis_server: RedisServer) -> None:
    def ask(address: str) -> tuple[Prediction, list[Prediction], list[str]]:
        with RouterClient(address, timeout_s=5.0) as client:
            one = client.predict("sentiment", "a calm day", policy=Policy.MODEL_ONLY)
            batch = client.predict_batch("sentiment", ["a calm day", "a storm"])
            tasks = [info.task for info in client.list_tasks()]
            with pytest.raises(RequestError) as error:
                client.predict("weather", "sunny")
            assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
        return one, batch, tasks

    async def body(bed: Bed) -> None:
        # In a thread: the blocking calls would otherwise stall the server's event loop.
        one, batch, tasks = await asyncio.to_thread(ask, bed.address)
        assert (one.route, one.model, one.model_version) == (Route.MODEL, "sentiment", "3")
        assert one.label == fake_label(SENTIMENT_LABELS, "a calm day")
        assert [answer.label for answer in batch] == [
            fake_label(SENTIMENT_LABELS, text) for text in ("a calm day", "a storm")
        ]
        assert tasks == ["sentiment", "topic"]

    run_on_bed(bed_settings(redis_server.url), body)


def test_a_client_deadline_applies_to_every_call_unless_one_passes_its_own(
    redis_server: RedisServer,
) -> None:
    async def body(bed: Bed) -> None:
        async with AsyncRouterClient(bed.address, timeout_s=0.05, retries=0) as client:
            with pytest.raises(RequestError) as error:
                await client.predict("topic", "in a hurry")
            assert error.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            answer = await client.predict("topic", "in no hurry", timeout_s=5.0)
            assert answer.route == Route.MODEL
        # The router passed the time left of each deadline on to the model.
        assert [timeout_s < 0.06 for _, _, _, timeout_s in bed.student.calls] == [True, False]

    run_on_bed(bed_settings(redis_server.url), body, FakeStudent(delay_s=0.3))


def test_bad_client_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="retries must be 0 or more"):
        RouterClient("127.0.0.1:1", retries=-1)
    with pytest.raises(ValueError, match="a client certificate needs its key"):
        TlsConfig(cert_file=tmp_path / "client.pem").credentials()
    with pytest.raises(FileNotFoundError):
        TlsConfig(ca_file=tmp_path / "missing-ca.pem").credentials()


def test_every_policy_round_trips_through_the_wire_enum() -> None:
    for policy in Policy:
        assert contract.policy_from_wire(contract.policy_to_wire(policy)) is policy
    assert contract.policy_from_wire(0) is Policy.AUTO  # unspecified means auto
    with pytest.raises(ValueError, match="unknown policy 4"):
        contract.policy_from_wire(4)


def test_a_response_with_an_undefined_route_is_refused() -> None:
    for route in Route:
        message = contract.PredictResponse(label="x", route=contract.route_to_wire(route))
        assert contract.prediction_from_message(message).route is route
    with pytest.raises(ValueError, match="unknown route 0"):
        contract.prediction_from_message(contract.PredictResponse(label="x"))
