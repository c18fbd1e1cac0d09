"""Helpers for router tests: a client per router, and cache generations written like the batch
job."""

import time

from router.client import Policy, Prediction, RouterClient
from services.reliability.testbed import publish_generation

__all__ = ["client", "predict", "publish_generation", "wait_for_generation"]


def client(address: str) -> RouterClient:
    """A client that reports every failure at once (no retries), with a 10 s deadline."""
    return RouterClient(address, timeout_s=10.0, retries=0)


def predict(
    address: str, task: str, text: str, policy: Policy = Policy.AUTO, **options: float
) -> Prediction:
    with client(address) as router:
        return router.predict(task, text, policy=policy, **options)


def wait_for_generation(address: str, task: str, generation: str, seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    with client(address) as router:
        while time.monotonic() < deadline:
            tasks = router.list_tasks()
            if any(t.task == task and t.cache_generation == generation for t in tasks):
                return
            time.sleep(0.05)
    raise AssertionError(f"router never switched {task} to generation {generation}")
