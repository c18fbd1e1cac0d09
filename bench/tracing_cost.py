"""What tracing costs the router: the same router with tracing off, on (every request) and
sampled at 1%, side by side on the stack's Redis and Triton, exporting over OTLP/gRPC to a
receiver in this process that counts what it is sent.

The premise of a ratio is that tracing did what its row says: the traced router exported a
server span for (nearly) every request it answered, the sampled one for about 1% of them.
"""

from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from bench.load import Call
from bench.routes import RoutedCalls, premise
from router.client import AsyncRouterClient, Route
from services.stack.router_process import RouterProcess

__all__ = ["export_premises", "tracing_cost"]

# (name, call, pids whose CPU it costs) of phases measured in alternating rounds.
Interleave = Callable[[list[tuple[str, Call[object], list[int]]]], Awaitable[list[dict[str, Any]]]]
_ROOT = "switchyard.v1.Router/Predict"


class _Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Counts the server spans each service exports."""

    def __init__(self) -> None:
        self.roots: Counter[str] = Counter()

    def Export(  # noqa: N802 - the RPC's name
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            service = next(
                (kv.value.string_value for kv in resource_spans.resource.attributes
                 if kv.key == "service.name"), "",
            )  # fmt: skip
            for scope in resource_spans.scope_spans:
                self.roots[service] += sum(span.name == _ROOT for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


def export_premises(exported: dict[str, int], answered: dict[str, int]) -> dict[str, str]:
    """Why each traced router's premise failed (empty when it held): the router tracing
    every request exported a server span for at least 90% of its answers, the one sampling
    1% for some but at most 5% of them."""
    premises = {"on": "", "1%": ""}
    if exported["on"] < 0.9 * answered["on"]:
        premises["on"] = f"the traced router exported {exported['on']} of {answered['on']} requests"
    if not 0 < exported["1%"] <= 0.05 * answered["1%"]:
        premises["1%"] = f"the 1% router exported {exported['1%']} of {answered['1%']} requests"
    return premises


async def tracing_cost(
    task: str,
    folder: Path,
    repository: Path,
    redis_url: str,
    triton_port: int,
    cached: list[str],
    unseen: list[str],
    interleave: Interleave,
    shared_pids: list[int],
) -> dict[str, Any]:
    """Rows and ratios of batch-1 requests through the three routers (`shared_pids`: the
    Redis and Triton they share, whose CPU counts too)."""
    receiver = _Receiver()
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    endpoint = f"http://127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    ratios_of = {"off": None, "on": 1.0, "1%": 0.01}
    routers: dict[str, RouterProcess] = {}
    try:
        for name, ratio in ratios_of.items():
            tracing: dict[str, Any] = {} if ratio is None else {
                "tracing_otlp_endpoint": endpoint,
                "tracing_sample_ratio": ratio,
                "tracing_service_name": f"bench-tracing-{name}",
            }  # fmt: skip
            routers[name] = RouterProcess(
                folder, repository, redis_url, triton_port, max_batch_texts=64, **tracing
            )
            routers[name].start()
        clients = {
            name: AsyncRouterClient(router.address, timeout_s=None, retries=0)
            for name, router in routers.items()
        }
        calls = {
            (route, name): RoutedCalls(clients[name], task, texts, route)
            for route, texts in ((Route.CACHE, cached), (Route.MODEL, unseen))
            for name in routers
        }
        phases: list[tuple[str, Call[object], list[int]]] = [
            (f"(t) {route.value} route, tracing {name}", call, [routers[name].pid, *shared_pids])
            for (route, name), call in calls.items()
        ]
        rows = await interleave(phases)
        answered = {
            name: sum(calls[(route, name)].answers for route in (Route.CACHE, Route.MODEL))
            for name in routers
        }
        for client in clients.values():
            await client.close()
    finally:
        for router in routers.values():
            router.stop()  # the traced ones send what they still hold as they stop
        server.stop(grace=1.0)
    exported = {name: receiver.roots[f"bench-tracing-{name}"] for name in routers}
    exports = export_premises(exported, answered)

    def p50(route: Route, name: str) -> float:
        path = f"(t) {route.value} route, tracing {name}"
        value: float = next(r["p50_ms"] for r in rows if r["path"] == path)
        return value

    def refused(route: Route, *names: str) -> str:
        failed = (premise(calls[(route, name)]) for name in names)
        return next((why for why in failed if why), "")

    ratios = [
        {"ratio": f"{route.value} route p50, tracing {name} / off (t)",
         "value": p50(route, name) / p50(route, "off"),
         "target": target,
         "premise": refused(route, "off", name) or exports[name]}
        for route in (Route.CACHE, Route.MODEL)
        for name, target in (("on", "<= 1.15"), ("1%", "<= 1.05"))
    ]  # fmt: skip
    return {"rows": rows, "ratios": ratios, "exported": exported, "answered": answered}
