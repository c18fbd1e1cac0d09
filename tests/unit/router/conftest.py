"""The router's request path in-process: the real Router, PredictionCache (on the session's
real redis-server), servicer and status table, behind a real grpc.aio server on a free port,
with a stand-in student. Each bed gets cache namespaces of its own."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import redis
from prometheus_client import CollectorRegistry

from router.cache import PredictionCache
from router.client import AsyncRouterClient
from router.metrics import RouterMetrics
from router.routing import Router
from router.server import prediction_cache
from router.servicer import RouterServicer, add_router_to_server
from router.settings import RouterSettings
from router.tasks import read_tasks
from services.reliability.testbed import publish_generation
from tests.unit.aio import run
from tests.unit.router.fakes import LABELS, FakeStudent


def bed_settings(redis_url: str, **overrides: Any) -> RouterSettings:
    """Settings of a test deployment, with cache namespaces no other test uses."""
    suffix = uuid.uuid4().hex[:8]
    settings: dict[str, Any] = {
        "model_repository": Path("unused"),
        "redis_url": redis_url,
        "max_batch_texts": 8,
        "breaker_reset_seconds": 0.3,
        "tasks": {
            "topic": {
                "model": "topic",
                "cache_namespace": f"topic-{suffix}",
                "max_text_length": 500,
            },
            "sentiment": {
                "model": "sentiment",
                "cache_namespace": f"sentiment-{suffix}",
                "max_text_length": 280,
            },
        },
    }
    return RouterSettings(**(settings | overrides))


@dataclass
class Bed:
    settings: RouterSettings
    router: Router
    cache: PredictionCache
    student: FakeStudent
    registry: CollectorRegistry
    client: AsyncRouterClient
    address: str

    def namespace(self, task: str) -> str:
        return self.settings.tasks[task].cache_namespace

    async def publish(self, task: str, answers: dict[str, str], redis_client: redis.Redis) -> str:
        """Write a complete generation of `answers` and wait until the router follows it."""
        namespace = self.namespace(task)
        generation = publish_generation(redis_client, namespace, LABELS[task], answers)
        # Announced at once, but a loaded machine (a test load beside a six-node cluster on
        # two cores) may take seconds to deliver it.
        await until(lambda: self.cache.generation(namespace) == generation, seconds=15.0)
        return generation

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition never held")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def serving(
    settings: RouterSettings, student: FakeStudent | None = None
) -> AsyncIterator[Bed]:
    """The router of `settings` on a free loopback port, and a client of it (no retries)."""
    registry = CollectorRegistry()
    metrics = RouterMetrics(registry)
    tasks = read_tasks(settings).tasks
    cache = prediction_cache(settings, tasks, metrics)
    await cache.start()
    fake = student if student is not None else FakeStudent()
    router = Router(settings, tasks, cache, fake, metrics)
    server = grpc.aio.server()
    add_router_to_server(RouterServicer(router, metrics), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    address = f"127.0.0.1:{port}"
    client = AsyncRouterClient(address, retries=0)
    try:
        yield Bed(settings, router, cache, fake, registry, client, address)
    finally:
        await client.close()
        await server.stop(0)
        await router.drain()
        await cache.close()


def run_on_bed(
    settings: RouterSettings,
    body: Callable[[Bed], Awaitable[None]],
    student: FakeStudent | None = None,
) -> None:
    """Run `body` against a fresh bed on an event loop of its own."""

    async def main() -> None:
        async with serving(settings, student) as bed:
            await body(bed)

    run(main)
