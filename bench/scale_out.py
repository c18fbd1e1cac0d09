"""The scale-out rows of `switchyard bench`: the cache route on a six-node Redis Cluster
against a single Redis, and the model route over two Triton replicas against one, each pair
measured in the same run by private routers that differ only in that.

Each row checks its premise before a ratio is made of it: every cache-route answer came from
the cache, every model-route answer from the model, and with two replicas both served calls
(Triton's own statistics). A ratio whose premise failed is reported as refused.
"""

import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis

from bench.load import Call
from bench.routes import RoutedCalls, premise
from router.client import AsyncRouterClient, Route
from services.contracts.cache_schema import generation_key, prediction_key
from services.processes.redis_cluster import RedisClusterServers
from services.stack.router_process import RouterProcess
from services.triton.server import TritonServer, TritonSettings

__all__ = ["scale_out"]

Measure = Callable[[str, Call[object], int, list[int]], Awaitable[dict[str, Any]]]


async def scale_out(
    task: str,
    repository: Path,
    redis_url: str,
    redis_pid: int,
    cached: list[str],
    unseen: list[str],
    measure: Measure,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Rows and ratios of the scale-out comparisons; `measure(name, call, clients, pids)`
    runs one phase and returns its row. The Redis at `redis_url` (the stack's) holds the
    task's current generation."""
    rows: list[dict[str, Any]] = []
    ratios: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="switchyard-bench-scale-") as scratch:
        folder = Path(scratch)
        cluster = RedisClusterServers(folder / "cluster")
        tritons = [TritonServer(TritonSettings.on_free_ports(repository)) for _ in range(2)]
        ports = [triton.settings.grpc_port for triton in tritons]
        routers: dict[str, RouterProcess] = {}
        try:
            say("scale-out: a six-node Redis Cluster and two Triton replicas")
            cluster.start()
            for triton in tritons:
                triton.start()
            _copy_generation(task, redis_url, cluster, cached)
            common: dict[str, Any] = {"max_batch_texts": 64, "health_poll_seconds": 1.0}
            routers = {
                "single": RouterProcess(folder, repository, redis_url, ports[0], **common),
                "cluster": RouterProcess(
                    folder, repository, cluster.url, ports[0], redis_cluster=True, **common
                ),
                "two": RouterProcess(
                    folder,
                    repository,
                    redis_url,
                    ports[0],
                    triton_url=",".join(f"127.0.0.1:{port}" for port in ports),
                    **common,
                ),
            }
            for router in routers.values():
                router.start()
            clients = {
                name: AsyncRouterClient(router.address, timeout_s=None, retries=0)
                for name, router in routers.items()
            }
            pids = {
                "single": [redis_pid],
                "cluster": cluster.pids(),
                "one": [tritons[0].pid or 0],
                "two": [t.pid or 0 for t in tritons],
            }
            cache = {
                name: RoutedCalls(clients[name], task, cached, Route.CACHE)
                for name in ("single", "cluster")
            }
            model = {
                name: RoutedCalls(
                    clients["single" if name == "one" else "two"], task, unseen, Route.MODEL
                )
                for name in ("one", "two")
            }
            label = {
                "single": "(i) cache route, one Redis",
                "cluster": "(i) cache route, Redis Cluster",
                "one": "(j) model route, one Triton",
                "two": "(j) model route, two Tritons",
            }
            before = [triton.inference_count(task) for triton in tritons]
            for clients_n in (1, 8):
                for name in ("single", "cluster"):
                    router_pid = routers[name].pid
                    rows.append(
                        await measure(
                            label[name], cache[name], clients_n, [router_pid, *pids[name]]
                        )
                    )
                for name in ("one", "two"):
                    router_pid = routers["single" if name == "one" else "two"].pid
                    rows.append(
                        await measure(
                            label[name], model[name], clients_n, [router_pid, *pids[name]]
                        )
                    )
            served = [t.inference_count(task) - b for t, b in zip(tritons, before, strict=True)]
            for client in clients.values():
                await client.close()
        finally:
            for router in routers.values():
                router.stop()
            for triton in tritons:
                triton.stop()
            cluster.stop()

    def row(name: str, clients_n: int) -> dict[str, Any]:
        return next(r for r in rows if r["path"] == label[name] and r["concurrency"] == clients_n)

    cache_premise = premise(cache["single"]) or premise(cache["cluster"])
    model_premise = premise(model["one"]) or premise(model["two"])
    if not model_premise and min(served) == 0:
        model_premise = f"one of the two Tritons ran no inference ({served})"
    ratios += [
        {"ratio": "cache route p50, Redis Cluster / one Redis (i)",
         "value": row("cluster", 1)["p50_ms"] / row("single", 1)["p50_ms"],
         "target": "<= 1.3", "premise": cache_premise},
        {"ratio": "model route throughput at 8 clients, two Tritons / one (j)",
         "value": row("two", 8)["throughput_per_s"] / row("one", 8)["throughput_per_s"],
         "target": ">= 1.0", "premise": model_premise},
    ]  # fmt: skip
    return {"rows": rows, "ratios": ratios, "inferences_per_replica": served}


def _copy_generation(
    task: str, redis_url: str, cluster: RedisClusterServers, texts: list[str]
) -> None:
    """The task's current generation, for `texts`, copied from one Redis into the cluster."""
    single, target = redis.Redis.from_url(redis_url), cluster.client()
    pointer = single.get(generation_key(task))
    if pointer is None:
        raise RuntimeError(f"the stack's Redis holds no generation of {task!r}")
    generation = pointer.decode() if isinstance(pointer, bytes) else str(pointer)
    keys = [prediction_key(task, generation, text) for text in texts]
    values = single.mget(keys)
    with target.pipeline(transaction=False) as pipe:
        for key, value in zip(keys, values, strict=True):
            if value is not None:
                pipe.set(key, value, ex=3600)
        pipe.execute()
    target.set(generation_key(task), generation)
    single.close()
    target.close()
