"""TLS and mutual TLS on the router's gRPC port, and certificate rotation without a restart:
the real router process, certificates from throwaway CAs."""

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from services.redis_server import RedisServer
from tests.conftest import SWITCHYARD, RouterProcess
from tests.security.conftest import Pki, ask, make_pki, publish_topic_answer, router_process


def router_check(
    address: str, *options: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SWITCHYARD, "router", "check", "--address", address, *options],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def assert_refused(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as error:
        ask(channel)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def replace_file(target: Path, source: Path) -> None:
    """Swap in `source`'s content in one step, as rotation tools and Kubernetes do."""
    staged = target.with_name(target.name + ".new")
    shutil.copyfile(source, staged)
    staged.replace(target)


@pytest.fixture(scope="module")
def tls_router(
    tiny_build: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RouterProcess, Pki]]:
    directory = tmp_path_factory.mktemp("tls-router")
    pki = make_pki(directory / "pki")
    with RedisServer(directory) as redis_server:
        router = router_process(
            directory,
            tiny_build,
            redis_server.url,
            credentials=pki.credentials(),
            tls_cert_file=str(pki.cert_file),
            tls_key_file=str(pki.key_file),
        )
        try:
            router.start()
            publish_topic_answer(redis_server.client(), router.channel())
            yield router, pki
        finally:
            router.stop()


def test_a_client_trusting_the_ca_gets_the_cached_answer(
    tls_router: tuple[RouterProcess, Pki],
) -> None:
    router, pki = tls_router
    ask(pki.channel(router.address))


def test_a_plaintext_client_is_refused(tls_router: tuple[RouterProcess, Pki]) -> None:
    router, _ = tls_router
    assert_refused(grpc.insecure_channel(router.address))


def test_a_client_trusting_another_ca_is_refused(
    tls_router: tuple[RouterProcess, Pki], other_pki: Pki
) -> None:
    router, _ = tls_router
    assert_refused(other_pki.channel(router.address))


def test_router_check_speaks_tls(tls_router: tuple[RouterProcess, Pki]) -> None:
    router, pki = tls_router
    result = router_check(router.address, "--tls-ca-file", str(pki.ca_file))
    assert (result.returncode, result.stdout.strip()) == (0, "SERVING"), result.stderr
    # As in a container's health check: the options from the environment.
    env = {
        "SWITCHYARD_CHECK_TLS_CA_FILE": str(pki.ca_file),
        "SWITCHYARD_CHECK_TLS_SERVER_NAME": "localhost",
    }
    result = router_check(router.address, env=env)
    assert result.returncode == 0, result.stderr
    result = router_check(router.address)
    assert result.returncode != 0
    assert "UNAVAILABLE" in result.stderr


def test_mutual_tls_requires_a_client_certificate_from_the_ca(
    tiny_build: Path, tmp_path: Path, pki: Pki, other_pki: Pki, plain_redis: RedisServer
) -> None:
    router = router_process(
        tmp_path,
        tiny_build,
        plain_redis.url,
        credentials=pki.credentials(client_cert=True),
        tls_cert_file=str(pki.cert_file),
        tls_key_file=str(pki.key_file),
        tls_client_ca_file=str(pki.ca_file),
    )
    try:
        router.start()
        publish_topic_answer(plain_redis.client(), router.channel())
        ask(pki.channel(router.address, client_cert=True))
        assert_refused(pki.channel(router.address))
        foreign_client = grpc.ssl_channel_credentials(
            pki.ca_file.read_bytes(),
            other_pki.client_key_file.read_bytes(),
            other_pki.client_cert_file.read_bytes(),
        )
        assert_refused(
            grpc.secure_channel(
                router.address, foreign_client, [("grpc.use_local_subchannel_pool", 1)]
            )
        )
        client_files = ["--tls-cert-file", str(pki.client_cert_file)]
        client_files += ["--tls-key-file", str(pki.client_key_file)]
        result = router_check(router.address, "--tls-ca-file", str(pki.ca_file), *client_files)
        assert result.returncode == 0, result.stderr
    finally:
        router.stop()


def test_rotated_certificates_apply_to_new_connections_without_a_restart(
    tiny_build: Path, tmp_path: Path, pki: Pki, other_pki: Pki, plain_redis: RedisServer
) -> None:
    live = tmp_path / "live"
    live.mkdir()
    cert_file, key_file = live / "tls.crt", live / "tls.key"
    shutil.copyfile(pki.cert_file, cert_file)
    shutil.copyfile(pki.key_file, key_file)
    router = router_process(
        tmp_path,
        tiny_build,
        plain_redis.url,
        credentials=pki.credentials(),
        tls_cert_file=str(cert_file),
        tls_key_file=str(key_file),
    )
    try:
        router.start()
        assert router.process is not None
        pid = router.process.pid
        publish_topic_answer(plain_redis.client(), router.channel())
        opened_before = pki.channel(router.address)
        ask(opened_before)

        # Half way through a rotation the new certificate does not match the old key: the
        # router keeps serving the previous pair.
        replace_file(cert_file, other_pki.cert_file)
        ask(pki.channel(router.address))
        replace_file(key_file, other_pki.key_file)
        deadline = time.monotonic() + 5
        while True:
            try:
                ask(other_pki.channel(router.address))
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert_refused(pki.channel(router.address))
        # A connection keeps the certificate it was opened with.
        ask(opened_before)
        assert router.process.pid == pid and router.process.poll() is None
    finally:
        router.stop()
        log = router.log_text()
    assert "TLS certificates reloaded" in log
    assert "keeping the previous certificates" in log
