"""Fixtures of both tiers: one real redis-server and one real Redis Cluster (six nodes) for
the whole session."""

from collections.abc import Iterator

import pytest

from services.processes.redis_cluster import RedisClusterServers
from services.processes.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port; tests share it, so each uses keys (or a
    cache namespace) of its own."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """Three masters and three replicas on free loopback ports, shared like `redis_server`;
    a test that stops a node must leave the cluster healthy again."""
    with RedisClusterServers(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster
