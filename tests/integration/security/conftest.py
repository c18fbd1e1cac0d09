"""Certificates from throwaway CAs, and redis-server with TLS and ACL users, for the security
tests. Every process a fixture starts is stopped when the test ends, pass or fail."""

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import trustme

from router.client import Prediction, Route, RouterClient, TlsConfig
from services.processes.ports import free_port
from services.processes.redis_server import RedisServer
from tests.integration.conftest import RouterProcess
from tests.integration.router.helpers import publish_generation

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

    def tls(self, client_cert: bool = False) -> TlsConfig:
        """TLS trusting this CA, presenting its client certificate if asked."""
        if not client_cert:
            return TlsConfig(ca_file=self.ca_file)
        return TlsConfig(self.ca_file, self.client_cert_file, self.client_key_file)

    def client(self, address: str, client_cert: bool = False) -> RouterClient:
        return fresh_client(address, self.tls(client_cert))


def fresh_client(address: str, tls: TlsConfig | None = None) -> RouterClient:
    """A client of its own connection (no subchannel shared with other channels), so each
    one makes a fresh TLS handshake; no retries, so a refusal shows at once."""
    return RouterClient(
        address, tls=tls, retries=0, options=[("grpc.use_local_subchannel_pool", 1)]
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

    def client(self, **options: Any) -> "redis.Redis":
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
            host=self.host,
            port=self.port,
            username="admin",
            password=self.admin_password,
            **tls,
            **options,
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


def publish_topic_answer(client: "redis.Redis", router: RouterClient) -> None:
    """Publish a generation answering CACHED_TEXT and wait until the router follows it."""
    generation = publish_generation(client, "topic", TOPIC_LABELS, {CACHED_TEXT: "politics"})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        tasks = router.list_tasks()
        if any(t.task == "topic" and t.cache_generation == generation for t in tasks):
            return
        time.sleep(0.05)
    raise AssertionError(f"the router never switched to generation {generation}")


def ask(router: RouterClient, timeout: float = 5) -> Prediction:
    """Predict CACHED_TEXT; the answer must come from the cache (there is no Triton)."""
    answer = router.predict("topic", CACHED_TEXT, timeout_s=timeout)
    assert (answer.route, answer.label) == (Route.CACHE, "politics")
    return answer
