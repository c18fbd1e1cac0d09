"""The gRPC face of the router: messages in, domain calls, messages out.

All error mapping and per-RPC metrics happen in `_observed`, the one wrapper every RPC
goes through.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from opentelemetry import trace

from router import contract
from router.answers import Answer, Policy
from router.errors import (
    CacheMiss,
    DeadlineExceeded,
    DependencyUnavailable,
    InvalidRequest,
    RouterError,
)
from router.metrics import RouterMetrics
from router.routing import Router
from router.tracing import NO_TRACER, end_rpc, rpc_span

__all__ = ["STATUS_OF", "RouterServicer", "add_router_to_server", "status_of"]

_log = logging.getLogger(__name__)

STATUS_OF: dict[type[RouterError], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    CacheMiss: grpc.StatusCode.NOT_FOUND,
    DependencyUnavailable: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
}
Reply = TypeVar("Reply")
Request = TypeVar("Request", bound=Message)


def status_of(error: RouterError) -> grpc.StatusCode:
    """The code of the nearest class in `error`'s ancestry that the table names, so a new
    subclass keeps its parent's code; INTERNAL for a RouterError the table does not know."""
    for kind in type(error).__mro__:
        if kind in STATUS_OF:
            return STATUS_OF[kind]
    return grpc.StatusCode.INTERNAL


def _parse(message_type: type[Request], raw: bytes) -> Request:
    """Parse here rather than in grpc, whose own failure is an opaque UNKNOWN status."""
    try:
        request: Request = message_type.FromString(raw)
    except DecodeError:
        raise InvalidRequest(
            f"the request is not a valid {message_type.DESCRIPTOR.full_name} message "
            "(malformed protobuf, or a string that is not UTF-8)"
        ) from None
    return request


def _policy(value: int) -> Policy:
    try:
        return contract.policy_from_wire(value)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _route_label(answers: list[Answer]) -> str:
    routes = {answer.route.value for answer in answers}
    return routes.pop() if len(routes) == 1 else "mixed"


class RouterServicer:
    """The Router service of protos/switchyard/v1/router.proto; requests arrive as bytes."""

    def __init__(
        self, router: Router, metrics: RouterMetrics, tracer: trace.Tracer = NO_TRACER
    ) -> None:
        self._router = router
        self._metrics = metrics
        self._tracer = tracer

    async def Predict(
        self, raw: bytes, context: grpc.aio.ServicerContext
    ) -> contract.PredictResponse:
        async def answer(
            request: contract.PredictRequest, started: float
        ) -> tuple[contract.PredictResponse, str]:
            (result,) = await self._router.predict(
                request.task,
                [request.text],
                _policy(request.policy),
                request.min_confidence,
                _deadline(context),
            )
            latency_ms = (time.perf_counter() - started) * 1000
            return contract.answer_message(result, latency_ms), result.route.value

        return await self._observed("Predict", contract.PredictRequest, raw, context, answer)

    async def PredictBatch(
        self, raw: bytes, context: grpc.aio.ServicerContext
    ) -> contract.PredictBatchResponse:
        async def answer(
            request: contract.PredictBatchRequest, started: float
        ) -> tuple[contract.PredictBatchResponse, str]:
            results = await self._router.predict(
                request.task,
                list(request.texts),
                _policy(request.policy),
                request.min_confidence,
                _deadline(context),
            )
            latency_ms = (time.perf_counter() - started) * 1000
            reply = contract.PredictBatchResponse(
                results=[contract.answer_message(result, latency_ms) for result in results]
            )
            return reply, _route_label(results)

        return await self._observed(
            "PredictBatch", contract.PredictBatchRequest, raw, context, answer
        )

    async def ListTasks(
        self, raw: bytes, context: grpc.aio.ServicerContext
    ) -> contract.ListTasksResponse:
        async def answer(
            request: contract.ListTasksRequest, started: float
        ) -> tuple[contract.ListTasksResponse, str]:
            tasks = [contract.task_message(info) for info in self._router.describe_tasks()]
            return contract.ListTasksResponse(tasks=tasks), "none"

        return await self._observed("ListTasks", contract.ListTasksRequest, raw, context, answer)

    async def _observed(
        self,
        method: str,
        message_type: type[Request],
        raw: bytes,
        context: grpc.aio.ServicerContext,
        answer: Callable[[Request, float], Awaitable[tuple[Reply, str]]],
    ) -> Reply:
        """Run one RPC: parse, map domain errors to status codes, record metrics in every case.

        Metrics are recorded before the status is sent, so a client that has its answer
        also finds it counted.
        """
        started = time.perf_counter()
        task_label, route = "unknown", "none"
        with rpc_span(self._tracer, contract.SERVICE, method, context) as span:
            try:
                request = _parse(message_type, raw)
                task: str = getattr(request, "task", "")
                # Only configured task names become label values; anything else is "unknown".
                task_label = task if self._router.serves(task) or not task else "unknown"
                reply, route = await answer(request, started)
            except RouterError as exc:
                code, message = status_of(exc), str(exc)
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                self._record(method, task_label, route, code, started, span, "cancelled")
                raise
            except Exception as exc:
                code = grpc.StatusCode.INTERNAL
                message = "internal error; the server log has details"
                # One line per error, and never the request's text.
                _log.error("%s failed for task %s: %s", method, task_label, type(exc).__name__)
            else:
                self._record(method, task_label, route, grpc.StatusCode.OK, started, span, "")
                return reply
            self._record(method, task_label, route, code, started, span, message)
        await context.abort(code, message)
        raise AssertionError("unreachable: context.abort raises")

    def _record(
        self,
        method: str,
        task: str,
        route: str,
        code: grpc.StatusCode,
        started: float,
        span: trace.Span,
        message: str,
    ) -> None:
        self._metrics.requests.labels(method, task, route, code.name).inc()
        latency = self._metrics.latency.labels(method, task, route)
        seconds = time.perf_counter() - started
        if not span.is_recording():
            latency.observe(seconds)
            return
        end_rpc(span, code, message)
        span.set_attributes({
            "switchyard.task": task,
            "switchyard.route": route,
            "switchyard.outcome": code.name,
        })  # fmt: skip
        # The bucket links to this trace (exemplars: OpenMetrics scrapes only).
        traced = span.get_span_context()
        latency.observe(
            seconds,
            exemplar={"trace_id": f"{traced.trace_id:032x}", "span_id": f"{traced.span_id:016x}"},
        )


def add_router_to_server(servicer: RouterServicer, server: grpc.aio.Server) -> None:
    """Register the Router service with raw request bytes, so `_parse` owns decoding errors."""
    replies: dict[str, Any] = {
        "Predict": contract.PredictResponse,
        "PredictBatch": contract.PredictBatchResponse,
        "ListTasks": contract.ListTasksResponse,
    }
    handlers = {
        method: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method), response_serializer=reply.SerializeToString
        )
        for method, reply in replies.items()
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(contract.SERVICE, handlers),)
    )
    # Registered methods skip grpc's per-call lookup of the generic handlers.
    server.add_registered_method_handlers(contract.SERVICE, handlers)
