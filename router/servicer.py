"""The gRPC face of the router: messages in, domain calls, messages out.

All error mapping and per-RPC metrics happen in `_observed`, the one wrapper every RPC
goes through.
"""

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from router._generated.switchyard.v1 import router_pb2
from router.cache import PredictionCache
from router.errors import (
    CacheMiss,
    DeadlineExceeded,
    DependencyUnavailable,
    InvalidRequest,
    RouterError,
)
from router.metrics import RouterMetrics
from router.model import StudentClient
from router.routing import Answer, Policy, Route, Router

__all__ = ["STATUS_OF", "RouterServicer", "add_router_to_server"]

_log = logging.getLogger(__name__)

STATUS_OF: dict[type[RouterError], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    CacheMiss: grpc.StatusCode.NOT_FOUND,
    DependencyUnavailable: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
}
_POLICIES: dict[int, Policy] = {
    router_pb2.ROUTE_POLICY_UNSPECIFIED: Policy.AUTO,
    router_pb2.ROUTE_POLICY_AUTO: Policy.AUTO,
    router_pb2.ROUTE_POLICY_CACHE_ONLY: Policy.CACHE_ONLY,
    router_pb2.ROUTE_POLICY_MODEL_ONLY: Policy.MODEL_ONLY,
}
_ROUTES = {Route.CACHE: router_pb2.ROUTE_CACHE, Route.MODEL: router_pb2.ROUTE_MODEL}
Reply = TypeVar("Reply")
Request = TypeVar("Request", bound=Message)


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
    if value not in _POLICIES:
        raise InvalidRequest(f"unknown policy {value}; use 0-3 (ROUTE_POLICY_*)")
    return _POLICIES[value]


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _message(answer: Answer, latency_ms: float) -> router_pb2.PredictResponse:
    return router_pb2.PredictResponse(
        label=answer.label,
        score=answer.score,
        scores=answer.scores,
        route=_ROUTES[answer.route],
        model=answer.model,
        model_version=answer.model_version,
        cache_generation=answer.cache_generation,
        server_latency_ms=latency_ms,
    )


def _route_label(answers: list[Answer]) -> str:
    routes = {answer.route.value for answer in answers}
    return routes.pop() if len(routes) == 1 else "mixed"


class RouterServicer:
    """The Router service of protos/switchyard/v1/router.proto; requests arrive as bytes."""

    def __init__(
        self,
        router: Router,
        cache: PredictionCache,
        student: StudentClient,
        metrics: RouterMetrics,
    ) -> None:
        self._router = router
        self._cache = cache
        self._student = student
        self._metrics = metrics

    async def Predict(
        self, raw: bytes, context: grpc.aio.ServicerContext
    ) -> router_pb2.PredictResponse:
        async def answer(
            request: router_pb2.PredictRequest, started: float
        ) -> tuple[router_pb2.PredictResponse, str]:
            (result,) = await self._router.predict(
                request.task,
                [request.text],
                _policy(request.policy),
                request.min_confidence,
                _deadline(context),
            )
            return _message(result, (time.perf_counter() - started) * 1000), result.route.value

        return await self._observed("Predict", router_pb2.PredictRequest, raw, context, answer)

    async def PredictBatch(
        self, raw: bytes, context: grpc.aio.ServicerContext
    ) -> router_pb2.PredictBatchResponse:
        async def answer(
            request: router_pb2.PredictBatchRequest, started: float
        ) -> tuple[router_pb2.PredictBatchResponse, str]:
            results = await self._router.predict(
                request.task,
                list(request.texts),
                _policy(request.policy),
                request.min_confidence,
                _deadline(context),
            )
            latency_ms = (time.perf_counter() - started) * 1000
            reply = router_pb2.PredictBatchResponse(
                results=[_message(result, latency_ms) for result in results]
            )
            return reply, _route_label(results)

        return await self._observed(
            "PredictBatch", router_pb2.PredictBatchRequest, raw, context, answer
        )

    async def ListTasks(
        self, raw: bytes, context: grpc.aio.ServicerContext
    ) -> router_pb2.ListTasksResponse:
        async def answer(
            request: router_pb2.ListTasksRequest, started: float
        ) -> tuple[router_pb2.ListTasksResponse, str]:
            tasks = []
            for name in sorted(self._router.tasks()):
                settings = self._router.task_settings(name)
                model = self._student.models[settings.model]
                tasks.append(
                    router_pb2.TaskInfo(
                        task=name,
                        labels=model.labels,
                        model=model.name,
                        model_version=model.version,
                        cache_generation=self._cache.generation(settings.cache_namespace) or "",
                        confidence_threshold=settings.confidence_threshold,
                        max_text_length=settings.max_text_length,
                    )
                )
            return router_pb2.ListTasksResponse(tasks=tasks), "none"

        return await self._observed("ListTasks", router_pb2.ListTasksRequest, raw, context, answer)

    async def _observed(
        self,
        method: str,
        message_type: type[Request],
        raw: bytes,
        context: grpc.aio.ServicerContext,
        answer: Callable[[Request, float], Awaitable[tuple[Reply, str]]],
    ) -> Reply:
        """Run one RPC: parse, map domain errors to status codes, record metrics in every case."""
        started = time.perf_counter()
        task_label, route, code = "unknown", "none", grpc.StatusCode.OK
        try:
            request = _parse(message_type, raw)
            task: str = getattr(request, "task", "")
            # Only configured task names become label values; anything else is "unknown".
            task_label = task if task in self._router.tasks() or not task else "unknown"
            reply, route = await answer(request, started)
            return reply
        except RouterError as exc:
            code = STATUS_OF[type(exc)]
            await context.abort(code, str(exc))
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            code = grpc.StatusCode.INTERNAL
            # One line per error, and never the request's text.
            _log.error("%s failed for task %s: %s", method, task_label, type(exc).__name__)
            await context.abort(code, "internal error; the server log has details")
        finally:
            self._metrics.requests.labels(method, task_label, route, code.name).inc()
            self._metrics.latency.labels(method, task_label, route).observe(
                time.perf_counter() - started
            )
        raise AssertionError("unreachable: context.abort raises")


def add_router_to_server(servicer: RouterServicer, server: grpc.aio.Server) -> None:
    """Register the Router service with raw request bytes, so `_parse` owns decoding errors."""
    replies: dict[str, Any] = {
        "Predict": router_pb2.PredictResponse,
        "PredictBatch": router_pb2.PredictBatchResponse,
        "ListTasks": router_pb2.ListTasksResponse,
    }
    handlers = {
        method: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method), response_serializer=reply.SerializeToString
        )
        for method, reply in replies.items()
    }
    service = router_pb2.DESCRIPTOR.services_by_name["Router"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    # Registered methods skip grpc's per-call lookup of the generic handlers.
    server.add_registered_method_handlers(service, handlers)
