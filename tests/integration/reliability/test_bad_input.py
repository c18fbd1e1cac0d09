"""Hostile requests, fuzzed with hypothesis, against the session's real router: every answer
is a status with a message (never INTERNAL or UNKNOWN), and the limits hold."""

import asyncio
import contextlib
import socket
import time
import urllib.request
import uuid
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router import contract
from router.client import AsyncRouterClient, Policy, RequestError
from services.reliability.testbed import Testbed
from services.stack.router_process import RouterProcess
from tests.integration.conftest import TASK_LIMITS
from tests.integration.router.helpers import predict

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
GOOD_CODES = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED"}


def _call(router: RouterProcess, method: str, payload: bytes) -> tuple[str, str]:
    with grpc.insecure_channel(router.address) as channel:
        try:
            channel.unary_unary(f"/{contract.SERVICE}/{method}")(payload, timeout=10)
        except grpc.RpcError as exc:
            return exc.code().name, exc.details() or ""
    return "OK", ""


def _assert_clear(code: str, details: str) -> None:
    assert code in GOOD_CODES, (code, details)
    assert code == "OK" or details, f"{code} without a message"


@FUZZ
@given(
    task=st.one_of(st.sampled_from(["topic", "sentiment", ""]), st.text(max_size=300)),
    text=st.text(max_size=600),
    policy=st.integers(min_value=-(2**31), max_value=2**31 - 1),
    min_confidence=st.floats(width=32),
)
def test_fuzzed_predict(
    router: RouterProcess, task: str, text: str, policy: int, min_confidence: float
) -> None:
    request = contract.PredictRequest(task=task, text=text, min_confidence=min_confidence)
    request.policy = policy  # type: ignore[assignment]
    code, details = _call(router, "Predict", request.SerializeToString())
    _assert_clear(code, details)
    valid = (
        task in {"topic", "sentiment"}
        and text.strip()
        and len(text) <= (500 if task == "topic" else 280)
        and 0 <= policy <= 3
        and 0.0 <= min_confidence <= 1.0
    )
    assert (code in {"OK", "NOT_FOUND"}) == bool(valid), (code, details)


@FUZZ
@given(texts=st.lists(st.text(max_size=50), max_size=12))
def test_fuzzed_batch(router: RouterProcess, texts: list[str]) -> None:
    request = contract.PredictBatchRequest(task="sentiment", texts=texts)
    code, details = _call(router, "PredictBatch", request.SerializeToString())
    _assert_clear(code, details)
    valid = 0 < len(texts) <= 8 and all(text.strip() for text in texts)
    assert (code == "OK") == valid, (code, details)


@FUZZ
@given(payload=st.binary(max_size=200), method=st.sampled_from(["Predict", "PredictBatch"]))
def test_raw_bytes(router: RouterProcess, payload: bytes, method: str) -> None:
    _assert_clear(*_call(router, method, payload))


@pytest.mark.parametrize(
    "payload",
    [
        b"\x0a\x05topic\x12\x03\xed\xa0\x80",  # a lone surrogate, CESU-8 encoded
        b"\x0a\x05topic\x12\xff\xff\xff\xff\x0f",  # a length past the end
        b"\x0a\x05topic\x12\x02\xc3",  # truncated UTF-8
    ],
)
def test_malformed_protobuf_is_invalid_argument(router: RouterProcess, payload: bytes) -> None:
    code, details = _call(router, "Predict", payload)
    assert code == "INVALID_ARGUMENT"
    assert "not a valid switchyard.v1.PredictRequest" in details


def test_garbage_on_the_port_does_not_hurt_the_router(router: RouterProcess) -> None:
    for junk in (b"GET / HTTP/1.1\r\n\r\n", b"\x00" * 1024, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", router.grpc_port), timeout=5) as connection:
            connection.sendall(junk)
            connection.settimeout(2)
            with contextlib.suppress(TimeoutError):
                connection.recv(1024)
    assert predict(router.address, "topic", "still answering", Policy.MODEL_ONLY)


def test_a_message_over_the_size_limit(router: RouterProcess) -> None:
    request = contract.PredictRequest(task="topic", text="x" * (5 << 20))
    code, details = _call(router, "Predict", request.SerializeToString())
    assert code == "RESOURCE_EXHAUSTED"
    assert "larger than max" in details


def test_a_long_unknown_task_is_clipped_in_the_message(router: RouterProcess) -> None:
    request = contract.PredictRequest(task="t" * 100_000, text="hello")
    code, details = _call(router, "Predict", request.SerializeToString())
    assert code == "INVALID_ARGUMENT"
    assert len(details) < 300 and "known tasks: sentiment, topic" in details


def test_the_concurrency_limit_is_enforced(tiny_build: Path, tmp_path: Path) -> None:
    """Past `max_concurrent_rpcs` the router refuses at once with RESOURCE_EXHAUSTED."""
    with Testbed(
        tmp_path, tiny_build / "model_repository", max_concurrent_rpcs=3, **TASK_LIMITS
    ) as bed:
        bed.stall_triton(True)  # every model request now waits for the Triton timeout

        async def ten_at_once() -> list[tuple[str, str]]:
            async with AsyncRouterClient(bed.router.address, timeout_s=5, retries=0) as client:
                calls = [client.predict("topic", "a slow one") for _ in range(10)]
                answers = await asyncio.gather(*calls, return_exceptions=True)
            return [
                (answer.code.name, answer.details)
                if isinstance(answer, RequestError)
                else ("OK", "")
                for answer in answers
            ]

        codes = asyncio.run(ten_at_once())
        bed.stall_triton(False)
    refused = [details for code, details in codes if code == "RESOURCE_EXHAUSTED"]
    assert len(refused) == 7, codes
    assert all("Concurrent RPC limit" in details for details in refused)
    assert [code for code, _ in codes].count("DEADLINE_EXCEEDED") == 3, codes


def test_texts_never_reach_logs_or_metrics(router: RouterProcess) -> None:
    marker = f"private-{uuid.uuid4().hex}"
    predict(router.address, "topic", f"{marker} about the markets")
    for bad in (
        contract.PredictRequest(task=marker, text=marker),
        contract.PredictRequest(task="topic", text=marker * 100),
    ):
        _call(router, "Predict", bad.SerializeToString())
    time.sleep(0.5)
    url = f"http://127.0.0.1:{router.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        assert marker not in response.read().decode()
    assert marker not in router.log_text()
