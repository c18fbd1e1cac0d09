"""Helpers for router tests: a stub per router, and cache generations written like the batch job."""

import time

import grpc

from router._generated.switchyard.v1 import router_pb2, router_pb2_grpc
from services.reliability.testbed import publish_generation

__all__ = ["predict", "publish_generation", "stub", "wait_for_generation"]


def stub(address: str) -> router_pb2_grpc.RouterStub:
    return router_pb2_grpc.RouterStub(grpc.insecure_channel(address))


def predict(
    address: str, task: str, text: str, policy: int = router_pb2.ROUTE_POLICY_AUTO, **kwargs: object
) -> router_pb2.PredictResponse:
    request = router_pb2.PredictRequest(task=task, text=text, policy=policy)
    response: router_pb2.PredictResponse = stub(address).Predict(request, timeout=10, **kwargs)
    return response


def wait_for_generation(address: str, task: str, generation: str, seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        tasks = stub(address).ListTasks(router_pb2.ListTasksRequest(), timeout=5).tasks
        if any(t.task == task and t.cache_generation == generation for t in tasks):
            return
        time.sleep(0.05)
    raise AssertionError(f"router never switched {task} to generation {generation}")
