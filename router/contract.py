"""The wire contract of protos/switchyard/v1/router.proto, as the rest of the code sees it:
its messages and service, and the one mapping between its enums and `Policy`/`Route`.

The generated code in `router/_generated` is private: the servicer and the client reach it
through this module, and so do the benchmark's baseline servers, which implement the same
contract.
"""

from router._generated.switchyard.v1 import router_pb2, router_pb2_grpc
from router.answers import Answer, Policy, Prediction, Route, TaskInfo

__all__ = [
    "DEPENDENCIES",
    "SERVICE",
    "ListTasksRequest",
    "ListTasksResponse",
    "PredictBatchRequest",
    "PredictBatchResponse",
    "PredictRequest",
    "PredictResponse",
    "RouterServicer",
    "RouterStub",
    "add_RouterServicer_to_server",
    "answer_message",
    "policy_from_wire",
    "policy_to_wire",
    "prediction_from_message",
    "route_to_wire",
    "task_from_message",
    "task_message",
]

SERVICE: str = router_pb2.DESCRIPTOR.services_by_name["Router"].full_name
DEPENDENCIES = ("redis", "triton")
"""Health services of their own: each of the router's dependencies, SERVING while it answers."""

PredictRequest = router_pb2.PredictRequest
PredictResponse = router_pb2.PredictResponse
PredictBatchRequest = router_pb2.PredictBatchRequest
PredictBatchResponse = router_pb2.PredictBatchResponse
ListTasksRequest = router_pb2.ListTasksRequest
ListTasksResponse = router_pb2.ListTasksResponse
RouterStub = router_pb2_grpc.RouterStub
RouterServicer = router_pb2_grpc.RouterServicer
add_RouterServicer_to_server = router_pb2_grpc.add_RouterServicer_to_server  # noqa: N816

_POLICY_OF_WIRE: dict[int, Policy] = {
    router_pb2.ROUTE_POLICY_UNSPECIFIED: Policy.AUTO,
    router_pb2.ROUTE_POLICY_AUTO: Policy.AUTO,
    router_pb2.ROUTE_POLICY_CACHE_ONLY: Policy.CACHE_ONLY,
    router_pb2.ROUTE_POLICY_MODEL_ONLY: Policy.MODEL_ONLY,
}
_WIRE_OF_POLICY: dict[Policy, router_pb2.RoutePolicy] = {
    Policy.AUTO: router_pb2.ROUTE_POLICY_AUTO,
    Policy.CACHE_ONLY: router_pb2.ROUTE_POLICY_CACHE_ONLY,
    Policy.MODEL_ONLY: router_pb2.ROUTE_POLICY_MODEL_ONLY,
}
_WIRE_OF_ROUTE: dict[Route, router_pb2.Route] = {
    Route.CACHE: router_pb2.ROUTE_CACHE,
    Route.MODEL: router_pb2.ROUTE_MODEL,
}
_ROUTE_OF_WIRE: dict[int, Route] = {wire: route for route, wire in _WIRE_OF_ROUTE.items()}


def policy_from_wire(value: int) -> Policy:
    """The policy of a request; ValueError for a value the contract does not define."""
    if value not in _POLICY_OF_WIRE:
        raise ValueError(f"unknown policy {value}; use 0-3 (ROUTE_POLICY_*)")
    return _POLICY_OF_WIRE[value]


def policy_to_wire(policy: Policy) -> router_pb2.RoutePolicy:
    return _WIRE_OF_POLICY[policy]


def route_to_wire(route: Route) -> router_pb2.Route:
    return _WIRE_OF_ROUTE[route]


def answer_message(answer: Answer, latency_ms: float) -> router_pb2.PredictResponse:
    return router_pb2.PredictResponse(
        label=answer.label,
        score=answer.score,
        scores=answer.scores,
        route=route_to_wire(answer.route),
        model=answer.model,
        model_version=answer.model_version,
        cache_generation=answer.cache_generation,
        server_latency_ms=latency_ms,
    )


def prediction_from_message(message: router_pb2.PredictResponse) -> Prediction:
    """The answer of a response; ValueError for a route the contract does not define."""
    if message.route not in _ROUTE_OF_WIRE:
        raise ValueError(f"the router answered with unknown route {message.route}")
    return Prediction(
        label=message.label,
        score=message.score,
        scores=dict(message.scores),
        route=_ROUTE_OF_WIRE[message.route],
        model=message.model,
        model_version=message.model_version,
        cache_generation=message.cache_generation,
        server_latency_ms=message.server_latency_ms,
    )


def task_message(info: TaskInfo) -> router_pb2.TaskInfo:
    return router_pb2.TaskInfo(
        task=info.task,
        labels=info.labels,
        model=info.model,
        model_version=info.model_version,
        cache_generation=info.cache_generation,
        confidence_threshold=info.confidence_threshold,
        max_text_length=info.max_text_length,
        candidate_version=info.candidate_version,
        canary_weight=info.canary_weight,
        shadow_share=info.shadow_share,
        version_problems=info.version_problems,
    )


def task_from_message(message: router_pb2.TaskInfo) -> TaskInfo:
    return TaskInfo(
        task=message.task,
        labels=list(message.labels),
        model=message.model,
        model_version=message.model_version,
        cache_generation=message.cache_generation,
        confidence_threshold=message.confidence_threshold,
        max_text_length=message.max_text_length,
        candidate_version=message.candidate_version,
        canary_weight=message.canary_weight,
        shadow_share=message.shadow_share,
        version_problems=list(message.version_problems),
    )
