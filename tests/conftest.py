"""Fixtures of both tiers: one real redis-server for the whole session."""

from collections.abc import Iterator

import pytest

from services.processes.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port; tests share it, so each uses keys (or a
    cache namespace) of its own."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server
