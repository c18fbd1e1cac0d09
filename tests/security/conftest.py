"""Certificates from throwaway CAs, and redis-server with TLS and ACL users, for the security
tests. Every process a fixture starts is stopped when the test ends, pass or fail."""

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
import trustme

from router._generated.switchyard.v1 import router_pb2, router_pb2_grpc
from services.ports import free_port
from services.redis_server import RedisServer
from tests.conftest import RouterProcess
from tests.router.helpers import publish_generation

TOPIC_LABELS = ["business", "entertainment", "politics", "sports", "tech"]
CACHED_TEXT = "Parliament passes the budget"


@dataclass(frozen=True)
class Pki:
    """A CA's certificate, a server certificate for 127.0.0.1/localhost and a client
    certificate, each as PEM files."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    client_cert_file: Path
    client_key_file: Path

    def channel(self, address: str, client_cert: bool = False) -> grpc.Channel:
        """A channel of its own connection (no subchannel shared with other channels), so
        each one makes a fresh TLS handshake."""
        return grpc.secure_channel(
            address, self.credentials(client_cert), [("grpc.use_local_subchannel_pool", 1)]
        )

    def credentials(self, client_cert: bool = False) -> grpc.ChannelCredentials:
        """Client credentials trusting this CA, presenting its client certificate if asked."""
        return grpc.ssl_channel_credentials(
            self.ca_file.read_bytes(),
            self.client_key_file.read_bytes() if client_cert else None,
            self.client_cert_file.read_bytes() if client_cert else None,
        )


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True)
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert("switchyard-client")
    pki = Pki(
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
        directory / "client.pem",
        directory / "client.key",
    )
    ca.cert_pem.write_to_path(str(pki.ca_file))
    for leaf, cert_file, key_file in (
        (server, pki.cert_file, pki.key_file),
        (client, pki.client_cert_file, pki.client_key_file),
    ):
        cert_file.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key_file))
    return pki


@pytest.fixture()
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture()
def other_pki(tmp_path: Path) -> Pki:
    """A second, unrelated CA: nothing of the first trusts it."""
    return make_pki(tmp_path / "other-pki")


class SecureRedis(RedisServer):
    """redis-server whose default user is off: `switchyard` (the services' user, limited to
    Switchyard's keys and channel) and `admin` (the tests' user) log in with passwords. With
    `pki`, it speaks TLS only and requires client certificates from that CA."""

    def __init__(self, directory: Path, pki: Pki | None = None) -> None:
        super().__init__(directory)
        self.pki = pki
        self.password = secrets.token_urlsafe(24)
        self.admin_password = secrets.token_urlsafe(24)
        self.url = f"{'rediss' if pki else 'redis'}://{self.host}:{self.port}/0"

    def command(self) -> list[str]:
        tls = (
            []
            if self.pki is None
            else [
                "--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", str(self.pki.cert_file),
                "--tls-key-file", str(self.pki.key_file),
                "--tls-ca-cert-file", str(self.pki.ca_file),
            ]
        )  # fmt: skip
        users = [
            "--user", "default", "off",
            "--user", "switchyard", "on", f">{self.password}",
            "~switchyard:*", "&switchyard:*", "+@all", "-@dangerous",
            "--user", "admin", "on", f">{self.admin_password}", "~*", "&*", "+@all",
        ]  # fmt: skip
        return [*super().command(), *tls, *users]

    def client(self) -> "redis.Redis":
        """The admin's client (for setting up and inspecting data)."""
        tls = (
            {}
            if self.pki is None
            else {
                "ssl": True,
                "ssl_ca_certs": str(self.pki.ca_file),
                "ssl_certfile": str(self.pki.client_cert_file),
                "ssl_keyfile": str(self.pki.client_key_file),
            }
        )
        return redis.Redis(
            host=self.host, port=self.port, username="admin", password=self.admin_password, **tls
        )


@pytest.fixture()
def acl_redis(tmp_path: Path) -> Iterator[SecureRedis]:
    with SecureRedis(tmp_path) as server:
        yield server


@pytest.fixture()
def tls_redis(tmp_path: Path, pki: Pki) -> Iterator[SecureRedis]:
    with SecureRedis(tmp_path, pki) as server:
        yield server


@pytest.fixture()
def plain_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path) as server:
        yield server


def router_process(
    directory: Path, tiny_build: Path, redis_url: str, **options: Any
) -> RouterProcess:
    """A router on the tiny build with no Triton (a port nothing listens on): cache hits
    and health need none."""
    return RouterProcess(
        directory, tiny_build / "model_repository", redis_url, free_port(), **options
    )


def publish_topic_answer(client: "redis.Redis", channel: grpc.Channel) -> None:
    """Publish a generation answering CACHED_TEXT and wait until the router follows it."""
    generation = publish_generation(client, "topic", TOPIC_LABELS, {CACHED_TEXT: "politics"})
    stub = router_pb2_grpc.RouterStub(channel)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        tasks = stub.ListTasks(router_pb2.ListTasksRequest(), timeout=5).tasks
        if any(t.task == "topic" and t.cache_generation == generation for t in tasks):
            return
        time.sleep(0.05)
    raise AssertionError(f"the router never switched to generation {generation}")


def ask(channel: grpc.Channel, timeout: float = 5) -> router_pb2.PredictResponse:
    """Predict CACHED_TEXT; the answer must come from the cache (there is no Triton)."""
    request = router_pb2.PredictRequest(task="topic", text=CACHED_TEXT)
    response: router_pb2.PredictResponse = router_pb2_grpc.RouterStub(channel).Predict(
        request, timeout=timeout
    )
    assert (response.route, response.label) == (router_pb2.ROUTE_CACHE, "politics")
    return response
