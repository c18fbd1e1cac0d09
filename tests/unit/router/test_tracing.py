"""Traces of `router.server.serve` in this process, caught by the SDK's in-memory exporter: the
span tree of a cache hit, a model answer and an error, continuing the client's W3C trace
context and passing it on to (a fake) Triton."""

import asyncio
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from router import contract
from router.client import AsyncRouterClient, Policy, Route
from router.server import serve
from services.processes.redis_server import RedisServer
from services.reliability.testbed import publish_generation
from tests.unit.aio import run
from tests.unit.router.fakes import TOPIC_LABELS, serving_triton
from tests.unit.router.test_server import router_settings

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
CACHED = "oil prices climb"
UNSEEN = "the film opens"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


async def traced_predict(
    stub: contract.RouterStub, task: str, text: str, policy: int = 0
) -> grpc.StatusCode:
    traceparent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    try:
        await stub.Predict(
            contract.PredictRequest(task=task, text=text, policy=policy),
            metadata=[("traceparent", traceparent)],
            timeout=5,
        )
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def tree(spans: tuple[ReadableSpan, ...]) -> dict[str, list[str]]:
    """Each span's name -> its children's names, sorted."""
    by_id = {span.context.span_id: span for span in spans}
    children: dict[str, list[str]] = {span.name: [] for span in spans}
    for span in spans:
        if span.parent is not None and span.parent.span_id in by_id:
            children[by_id[span.parent.span_id].name].append(span.name)
    return {name: sorted(names) for name, names in children.items()}


def test_each_request_is_a_span_tree_in_the_clients_trace(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    def finished() -> tuple[ReadableSpan, ...]:
        spans = exporter.get_finished_spans()
        exporter.clear()
        return spans

    async def main() -> None:
        async with serving_triton(["3"]) as (triton, triton_url):
            settings = router_settings(tmp_path, redis_server.url, triton_url)
            namespace = settings.tasks["topic"].cache_namespace
            ready = asyncio.Event()
            server = asyncio.create_task(serve(settings, ready, provider))
            await asyncio.wait_for(ready.wait(), 10)
            address = f"127.0.0.1:{settings.grpc_port}"
            publish_generation(redis_server.client(), namespace, TOPIC_LABELS, {CACHED: "business"})
            async with AsyncRouterClient(address, retries=0) as client:
                deadline = asyncio.get_running_loop().time() + 5
                while (await client.predict("topic", CACHED)).route != Route.CACHE:
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.05)
            finished()
            async with grpc.aio.insecure_channel(address) as channel:
                stub = contract.RouterStub(channel)
                assert await traced_predict(stub, "topic", CACHED) == grpc.StatusCode.OK
                hit = finished()
                assert await traced_predict(stub, "topic", UNSEEN) == grpc.StatusCode.OK
                miss = finished()
                invalid = await traced_predict(stub, "weather", UNSEEN)
                assert invalid == grpc.StatusCode.INVALID_ARGUMENT
                refused = finished()
                triton.fail_with = grpc.StatusCode.INTERNAL
                model_only = contract.policy_to_wire(Policy.MODEL_ONLY)
                failed = await traced_predict(stub, "topic", UNSEEN, model_only)
                assert failed == grpc.StatusCode.UNAVAILABLE
                error = finished()
            url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
            scrape = urllib.request.Request(url, headers={"Accept": OPENMETRICS})
            exposed = await asyncio.to_thread(
                lambda: urllib.request.urlopen(scrape, timeout=5).read().decode()
            )
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)

        rpc = "switchyard.v1.Router/Predict"
        # The hit: answered by the in-process tier, which held the text since the wait above.
        assert tree(hit) == {rpc: ["cache tier"], "cache tier": []}
        (root,) = [span for span in hit if span.name == rpc]
        assert root.kind is SpanKind.SERVER
        assert f"{root.context.trace_id:032x}" == CLIENT_TRACE
        assert root.parent is not None and f"{root.parent.span_id:016x}" == CLIENT_SPAN
        assert root.attributes is not None
        assert root.attributes["switchyard.route"] == "cache"
        assert root.attributes["switchyard.task"] == "topic"
        assert root.attributes["switchyard.outcome"] == "OK"
        assert root.attributes["switchyard.cache_generation"]
        everything = hit + miss + refused + error
        assert all(f"{span.context.trace_id:032x}" == CLIENT_TRACE for span in everything)

        # The model answer: the tier and Redis missed, the stable version answered via Triton.
        assert tree(miss) == {
            rpc: ["cache tier", "model stable", "redis GET"],
            "cache tier": [],
            "redis GET": [],
            "model stable": ["triton ModelInfer"],
            "triton ModelInfer": [],
        }
        spans = {span.name: span for span in miss}
        assert spans[rpc].attributes is not None
        assert spans[rpc].attributes["switchyard.route"] == "model"
        assert spans[rpc].attributes["switchyard.model_version"] == "3"
        call = spans["triton ModelInfer"]
        assert call.kind is SpanKind.CLIENT
        assert call.attributes is not None and call.attributes["server.address"] == triton_url
        # Triton was handed the trace context, the call's span as the parent.
        sent = [metadata.get("traceparent") for metadata in triton.metadata]
        assert f"00-{CLIENT_TRACE}-{call.context.span_id:016x}-01" in sent

        # A client's bad request: the RPC's span alone, its code the outcome; not a server
        # error (OpenTelemetry's convention for gRPC servers).
        (bad,) = refused
        assert bad.name == rpc and bad.status.status_code is StatusCode.UNSET
        assert bad.attributes is not None
        assert bad.attributes["switchyard.outcome"] == "INVALID_ARGUMENT"
        assert bad.attributes["rpc.response.status_code"] == "INVALID_ARGUMENT"
        # Triton failing: an error all the way up, from the call to the RPC.
        assert tree(error) == {
            rpc: ["model stable"], "model stable": ["triton ModelInfer"], "triton ModelInfer": [],
        }  # fmt: skip
        assert all(span.status.status_code is StatusCode.ERROR for span in error)
        (root,) = [span for span in error if span.name == rpc]
        assert root.attributes is not None
        assert root.attributes["switchyard.outcome"] == "UNAVAILABLE"
        # Latency buckets link to the traces that fell in them (OpenMetrics exemplars).
        exemplars = [
            line for line in exposed.splitlines()
            if line.startswith("switchyard_request_duration_seconds_bucket")
            and 'method="Predict"' in line and f'trace_id="{CLIENT_TRACE}"' in line
        ]  # fmt: skip
        assert exemplars, exposed[:2000]
        # No span holds a request's text.
        for span in everything:
            values = " ".join(str(v) for v in (span.attributes or {}).values()).lower()
            assert CACHED not in values and UNSEEN not in values, span.name

    run(main)


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that keeps what it is sent."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    def Export(  # noqa: N802 - the RPC's name
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


def test_spans_go_to_the_otlp_endpoint_and_the_sample_ratio_holds(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    collector = Collector()
    # Threads of its own: the exporter sends from the SDK's thread while the loop waits.
    receiver = grpc.server(ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, receiver)
    port = receiver.add_insecure_port("127.0.0.1:0")
    receiver.start()

    async def main() -> None:
        async with serving_triton(["3"]) as (_, triton_url):
            settings = router_settings(
                tmp_path, redis_server.url, triton_url,
                tracing_otlp_endpoint=f"http://127.0.0.1:{port}", tracing_sample_ratio=0.0,
            )  # fmt: skip
            ready = asyncio.Event()
            server = asyncio.create_task(serve(settings, ready))
            await asyncio.wait_for(ready.wait(), 10)
            address = f"127.0.0.1:{settings.grpc_port}"
            async with AsyncRouterClient(address, retries=0) as client:
                for text in ("one", "two", "three"):  # started here: a ratio of 0 drops them
                    await client.predict("topic", text)
            async with grpc.aio.insecure_channel(address) as channel:
                # A client's sampled trace is recorded whatever the ratio.
                assert await traced_predict(contract.RouterStub(channel), "topic", UNSEEN) == (
                    grpc.StatusCode.OK
                )
            server.cancel()  # the provider's shutdown sends what is still queued
            await asyncio.gather(server, return_exceptions=True)

    try:
        run(main)
    finally:
        receiver.stop(0)
    resources = [rs for request in collector.requests for rs in request.resource_spans]
    names = {kv.value.string_value for rs in resources for kv in rs.resource.attributes
             if kv.key == "service.name"}  # fmt: skip
    assert names == {"switchyard-router"}
    spans = [span for rs in resources for scope in rs.scope_spans for span in scope.spans]
    assert {span.trace_id.hex() for span in spans} == {CLIENT_TRACE}
    assert {"switchyard.v1.Router/Predict", "model stable", "triton ModelInfer"} <= {
        span.name for span in spans
    }
