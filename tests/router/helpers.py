"""Helpers for router tests: a stub per router, and cache generations written like the batch job."""

import time
import uuid

import grpc
import redis

from router._generated.switchyard.v1 import router_pb2, router_pb2_grpc
from services.cache_schema import (
    GENERATIONS_CHANNEL,
    CachedPrediction,
    generation_key,
    prediction_key,
)


def stub(address: str) -> router_pb2_grpc.RouterStub:
    return router_pb2_grpc.RouterStub(grpc.insecure_channel(address))


def publish_generation(
    client: redis.Redis, namespace: str, labels: list[str], answers: dict[str, str]
) -> str:
    """Write a complete generation of teacher answers, flip the pointer, announce it."""
    generation = uuid.uuid4().hex[:12]
    for text, label in answers.items():
        scores = {name: (0.9 if name == label else 0.1 / (len(labels) - 1)) for name in labels}
        prediction = CachedPrediction(label, scores, "teacher-test", "7", time.time())
        client.set(prediction_key(namespace, generation, text), prediction.to_json(), ex=600)
    client.set(generation_key(namespace), generation)
    client.publish(GENERATIONS_CHANNEL, f"{namespace} {generation}")
    return generation


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
