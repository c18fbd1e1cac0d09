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

from router.client import RequestError, RouterClient, TlsConfig
from services.processes.redis_server import RedisServer
from tests.integration.conftest import SWITCHYARD, RouterProcess
from tests.integration.security.conftest import (
    CACHED_TEXT,
    Pki,
    ask,
    fresh_client,
    make_pki,
    publish_topic_answer,
    router_process,
)


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


def assert_refused(router: RouterClient) -> None:
    with router, pytest.raises(RequestError) as error:
        ask(router)
    assert error.value.code == grpc.StatusCode.UNAVAILABLE


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
            tls=pki.tls(),
            tls_cert_file=str(pki.cert_file),
            tls_key_file=str(pki.key_file),
        )
        try:
            router.start()
            with router.client() as client:
                publish_topic_answer(redis_server.client(), client)
            yield router, pki
        finally:
            router.stop()


def test_a_client_trusting_the_ca_gets_the_cached_answer(
    tls_router: tuple[RouterProcess, Pki],
) -> None:
    router, pki = tls_router
    with pki.client(router.address) as client:
        ask(client)


def test_a_plaintext_client_is_refused(tls_router: tuple[RouterProcess, Pki]) -> None:
    router, _ = tls_router
    assert_refused(fresh_client(router.address))


def test_a_client_trusting_another_ca_is_refused(
    tls_router: tuple[RouterProcess, Pki], other_pki: Pki
) -> None:
    router, _ = tls_router
    assert_refused(other_pki.client(router.address))


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


def test_predict_speaks_tls(tls_router: tuple[RouterProcess, Pki]) -> None:
    router, pki = tls_router
    command = [*SWITCHYARD, "predict", "--task", "topic", "--address", router.address]
    command += ["--policy", "cache_only"]
    result = subprocess.run(
        [*command, "--tls-ca-file", str(pki.ca_file), CACHED_TEXT],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "politics" in result.stdout and "cache" in result.stdout
    plaintext = subprocess.run(
        [*command, "--timeout", "2", CACHED_TEXT], capture_output=True, text=True, timeout=60
    )
    assert plaintext.returncode == 2
    assert "UNAVAILABLE" in plaintext.stderr


def test_mutual_tls_requires_a_client_certificate_from_the_ca(
    tiny_build: Path, tmp_path: Path, pki: Pki, other_pki: Pki, plain_redis: RedisServer
) -> None:
    router = router_process(
        tmp_path,
        tiny_build,
        plain_redis.url,
        tls=pki.tls(client_cert=True),
        tls_cert_file=str(pki.cert_file),
        tls_key_file=str(pki.key_file),
        tls_client_ca_file=str(pki.ca_file),
    )
    try:
        router.start()
        with router.client() as client:
            publish_topic_answer(plain_redis.client(), client)
        with pki.client(router.address, client_cert=True) as client:
            ask(client)
        assert_refused(pki.client(router.address))
        foreign = TlsConfig(pki.ca_file, other_pki.client_cert_file, other_pki.client_key_file)
        assert_refused(fresh_client(router.address, foreign))
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
        tls=pki.tls(),
        tls_cert_file=str(cert_file),
        tls_key_file=str(key_file),
    )
    try:
        router.start()
        assert router.process is not None
        pid = router.process.pid
        with router.client() as client:
            publish_topic_answer(plain_redis.client(), client)
        opened_before = pki.client(router.address)
        ask(opened_before)

        # Half way through a rotation the new certificate does not match the old key: the
        # router keeps serving the previous pair.
        replace_file(cert_file, other_pki.cert_file)
        with pki.client(router.address) as client:
            ask(client)
        replace_file(key_file, other_pki.key_file)
        deadline = time.monotonic() + 5
        while True:
            try:
                with other_pki.client(router.address) as client:
                    ask(client)
                break
            except RequestError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert_refused(pki.client(router.address))
        # A connection keeps the certificate it was opened with.
        ask(opened_before)
        opened_before.close()
        assert router.process.pid == pid and router.process.returncode is None
    finally:
        router.stop()
        log = router.log_text()
    assert "TLS certificates reloaded" in log
    assert "keeping the previous certificates" in log
