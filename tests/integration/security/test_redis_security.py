"""Redis with ACL users and TLS under the real router and the real batch job: credentials
only from the environment, and never in a log line, an error or a metric."""

import json
import os
import secrets
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from router.client import Policy, RequestError, Route
from services.batch.errors import BatchError
from services.batch.job import BatchSettings
from services.batch.store import connect
from tests.integration.conftest import SWITCHYARD, RouterProcess
from tests.integration.security.conftest import (
    Pki,
    SecureRedis,
    ask,
    publish_topic_answer,
    router_process,
)


def router_env(password: str) -> dict[str, str]:
    return {
        "SWITCHYARD_ROUTER_REDIS_USERNAME": "switchyard",
        "SWITCHYARD_ROUTER_REDIS_PASSWORD": password,
    }


def metrics(router: RouterProcess) -> str:
    url = f"http://127.0.0.1:{router.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text: str = response.read().decode()
        return text


def test_router_logs_in_with_credentials_from_the_environment(
    tiny_build: Path, tmp_path: Path, acl_redis: SecureRedis
) -> None:
    # The URL, as in the settings file, holds no credentials; the environment adds them.
    router = router_process(tmp_path, tiny_build, acl_redis.url, env=router_env(acl_redis.password))
    try:
        router.start()
        with router.client() as client:
            publish_topic_answer(acl_redis.client(), client)
            ask(client)
        users = {client["user"] for client in acl_redis.client().client_list()}
        assert "switchyard" in users
        exported = metrics(router)
        assert 'switchyard_dependency_up{dependency="redis"} 1.0' in exported
    finally:
        router.stop()
        log = router.log_text()
    assert acl_redis.password not in log + exported


def test_a_wrong_password_leaves_the_router_up_and_redis_not_serving(
    tiny_build: Path, tmp_path: Path, acl_redis: SecureRedis
) -> None:
    wrong = secrets.token_urlsafe(24)
    router = router_process(tmp_path, tiny_build, acl_redis.url, env=router_env(wrong))
    try:
        # No Triton and no Redis: overall health is NOT_SERVING, but the router answers it.
        router.start(serving=False)
        deadline = time.monotonic() + 10
        status = None
        with router.client(timeout_s=2.0) as client:
            while status != "NOT_SERVING" and time.monotonic() < deadline:
                status = client.health("redis")
                time.sleep(0.1)
        assert status == "NOT_SERVING"
        exported = metrics(router)
        assert 'switchyard_dependency_up{dependency="redis"} 0.0' in exported
        assert router.process is not None and router.process.returncode is None
    finally:
        router.stop()
        log = router.log_text()
    assert wrong not in log + exported


def test_router_and_batch_job_over_tls_redis(
    tiny_build: Path, tmp_path: Path, tls_redis: SecureRedis, pki: Pki
) -> None:
    tls_files = {
        "REDIS_TLS_CA_FILE": str(pki.ca_file),
        "REDIS_TLS_CERT_FILE": str(pki.client_cert_file),
        "REDIS_TLS_KEY_FILE": str(pki.client_key_file),
    }
    # A redis:// URL: the CA file alone turns TLS on.
    plain_url = tls_redis.url.replace("rediss://", "redis://")
    router = router_process(
        tmp_path,
        tiny_build,
        plain_url,
        env=router_env(tls_redis.password)
        | {f"SWITCHYARD_ROUTER_{name}": value for name, value in tls_files.items()},
    )
    try:
        router.start()
        with router.client() as client:
            publish_topic_answer(tls_redis.client(), client)
            ask(client)

        texts = ["Shares rally after the merger", "The striker scores twice"]
        queries = tmp_path / "queries.jsonl"
        queries.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        batch_env = {
            "SWITCHYARD_BATCH_REDIS_URL": tls_redis.url,
            "SWITCHYARD_BATCH_REDIS_USERNAME": "switchyard",
            "SWITCHYARD_BATCH_REDIS_PASSWORD": tls_redis.password,
            **{f"SWITCHYARD_BATCH_{name}": value for name, value in tls_files.items()},
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
        result = subprocess.run(
            [
                *SWITCHYARD, "batch", "run", "--task", "topic", "--input", str(queries),
                "--build", str(tiny_build), "--no-progress",
            ],
            capture_output=True, text=True, timeout=300, env={**os.environ, **batch_env},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert "outcome: flipped" in result.stdout
        assert tls_redis.password not in result.stdout + result.stderr

        # The router hears the flip over its TLS pub/sub connection.
        deadline = time.monotonic() + 10
        with router.client() as client:
            while True:
                try:
                    answer = client.predict("topic", texts[0], policy=Policy.CACHE_ONLY)
                    break
                except RequestError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        assert (answer.route, answer.model) == (Route.CACHE, "topic-teacher")
    finally:
        router.stop()
        log = router.log_text()
    assert tls_redis.password not in log


def test_batch_connect_names_the_host_never_the_password(acl_redis: SecureRedis) -> None:
    wrong = secrets.token_urlsafe(24)
    settings = BatchSettings(
        redis_url=acl_redis.url, redis_username="switchyard", redis_password=wrong
    )
    with pytest.raises(BatchError) as error:
        connect(settings, timeout_s=2)
    message = str(error.value)
    assert f"{acl_redis.host}:{acl_redis.port}" in message
    assert wrong not in message
    assert wrong not in repr(settings)
