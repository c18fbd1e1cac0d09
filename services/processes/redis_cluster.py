"""A real Redis Cluster on loopback: `redis-server` nodes in cluster mode, joined with
`redis-cli --cluster create` (three masters with a replica each by default), for tests,
benchmarks and `switchyard up --redis-cluster`."""

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
import redis.cluster

from services.processes.redis_server import RedisServer

__all__ = ["RedisClusterServers", "cluster_nodes", "join_cluster", "wait_healthy"]

_SLOTS = 16384


def cluster_nodes(
    directory: Path,
    ports: Sequence[int | None],
    host: str = "127.0.0.1",
    node_timeout_ms: int = 2000,
) -> list[RedisServer]:
    """Cluster-mode redis-servers (not started) on `ports` (None: a free one)."""
    return [
        RedisServer(directory, port, host, cluster_node_timeout_ms=node_timeout_ms)
        for port in ports
    ]


def join_cluster(nodes: list[RedisServer], replicas: int, timeout_s: float) -> None:
    """Make one cluster of the running `nodes` with `redis-cli --cluster create` (each master
    gets `replicas` replicas) and wait until every node sees all slots served."""
    addresses = [f"{node.host}:{node.port}" for node in nodes]
    create = [
        "redis-cli", "--cluster", "create", *addresses,
        "--cluster-replicas", str(replicas), "--cluster-yes",
    ]  # fmt: skip
    result = subprocess.run(create, capture_output=True, text=True, timeout=timeout_s, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"redis-cli --cluster create failed: {result.stdout[-2000:]}{result.stderr}"
        )
    wait_healthy(nodes, timeout_s)


def wait_healthy(nodes: list[RedisServer], timeout_s: float) -> float:
    """Wait until every node of `nodes` that answers sees all slots served; the seconds it
    took. RuntimeError after `timeout_s`."""
    started = time.monotonic()
    deadline = started + timeout_s
    while not all(_healthy(node) for node in nodes):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Redis Cluster was not healthy within {timeout_s:g} s")
        time.sleep(0.1)
    return time.monotonic() - started


def _healthy(node: RedisServer) -> bool:
    client = node.client(socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        info = client.cluster("INFO")
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()
    return info.get("cluster_state") == "ok" and int(info.get("cluster_slots_ok", 0)) == _SLOTS


class RedisClusterServers:
    """`masters` masters with `replicas` replicas each, on free loopback ports in `directory`.
    `node_timeout_ms` is how long a master may be silent before its replica takes over."""

    def __init__(
        self, directory: Path, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 2000
    ) -> None:
        if masters < 3:
            raise ValueError("a Redis Cluster needs at least three masters")
        self._replicas = replicas
        self.nodes = cluster_nodes(
            directory, [None] * (masters * (1 + replicas)), node_timeout_ms=node_timeout_ms
        )
        self.url = self.nodes[0].url
        """A node's URL: a cluster client finds the others from it."""

    def start(self, timeout_s: float = 30.0) -> None:
        try:
            for node in self.nodes:
                node.start()
            join_cluster(self.nodes, self._replicas, timeout_s)
        except BaseException:
            self.stop()
            raise

    def pids(self) -> list[int]:
        """The process ids of the running nodes."""
        return [node.pid for node in self.nodes if node.running]

    def client(self, **options: Any) -> "redis.cluster.RedisCluster":
        """A cluster client; `options` are redis-py's."""
        first = self.nodes[0]
        return redis.cluster.RedisCluster(host=first.host, port=first.port, **options)

    def masters(self) -> list[RedisServer]:
        """The running nodes that are masters now."""
        found = []
        for node in self.nodes:
            if not node.running:
                continue
            client = node.client(socket_timeout=0.5)
            try:
                if client.execute_command("ROLE")[0] == b"master":
                    found.append(node)
            except (redis.RedisError, OSError):
                pass
            finally:
                client.close()
        return found

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> "RedisClusterServers":
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
