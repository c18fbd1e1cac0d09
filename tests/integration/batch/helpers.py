"""What the batch job's integration tests share: inputs, runs of the CLI, and readings of
the results in Redis and in the metrics file."""

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from prometheus_client.parser import text_string_to_metric_families

from router.client import Policy, Prediction
from services.contracts.cache_schema import quality_samples_key
from services.contracts.text import normalize_text
from services.pipeline.teacher import load_classifier
from services.pipeline.training import predict_logits
from services.processes.redis_server import RedisServer
from services.stack.router_process import RouterProcess
from tests.integration.conftest import TASK_LIMITS, run_switchyard


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def batch_run(
    tiny_build: Path,
    redis_url: str,
    *args: str,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return run_switchyard(
        "batch", "run", "--build", str(tiny_build), "--redis-url", redis_url, "--no-progress",
        *args, check=check, env=env,
    )  # fmt: skip


def metrics(path: Path) -> dict[str, float]:
    """The textfile's samples as {name or name:outcome: value}."""
    values = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            outcome = sample.labels.get("outcome")
            values[f"{sample.name}:{outcome}" if outcome else sample.name] = sample.value
    return values


def teacher_labels(tiny_build: Path, task: str, texts: list[str]) -> list[str]:
    """The teacher's own answers, computed here without the batch job."""
    model, tokenizer = load_classifier(tiny_build / "work" / task / "teacher" / "model")
    info = json.loads((tiny_build / "work" / task / "teacher" / "teacher.json").read_text())
    normalized = [normalize_text(text) for text in texts]
    logits = predict_logits(model, tokenizer, normalized, info["max_length"])
    return [model.config.id2label[int(i)] for i in logits.argmax(axis=1)]


def generation_keys(client: redis.Redis, namespace: str, generation: str) -> dict[str, bytes]:
    keys = [
        key
        for key in client.scan_iter(f"switchyard:{namespace}:{generation}:*", count=1000)
        if not key.endswith(b":meta")
    ]
    values = client.mget(keys) if keys else []
    return {key.decode().rsplit(":", 1)[1]: value for key, value in zip(keys, values, strict=True)}


@contextmanager
def namespaced_router(
    directory: Path,
    tiny_build: Path,
    redis_server: RedisServer,
    triton_port: int,
    task: str,
    namespace: str,
    **settings: Any,
) -> Iterator[RouterProcess]:
    """A router serving `task` from a cache namespace of its own; stopped, and every key of
    the namespace deleted, afterwards."""
    tasks = {**TASK_LIMITS["tasks"]}
    tasks[task] = {**tasks[task], "cache_namespace": namespace}
    router = RouterProcess(
        directory, tiny_build / "model_repository", redis_server.url, triton_port,
        tasks=tasks, **settings,
    )  # fmt: skip
    try:
        router.start()
        yield router
    finally:
        router.stop()
        client = redis_server.client()
        for pattern in (f"switchyard:{{{namespace}}}*", f"switchyard:{namespace}:*"):
            for key in client.scan_iter(match=pattern, count=1000):
                client.delete(key)


def sampled_model_answers(
    router: RouterProcess, redis_server: RedisServer, task: str, namespace: str, texts: list[str]
) -> list[Prediction]:
    """The model route's answer to each text, once the router (sampling every answer) has
    recorded them all, off the request path."""
    with router.client() as client:
        answers = [client.predict(task, text, policy=Policy.MODEL_ONLY) for text in texts]
    stream = quality_samples_key(namespace)
    redis_client = redis_server.client()
    deadline = time.monotonic() + 10
    while redis_client.xlen(stream) < len(texts) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert redis_client.xlen(stream) == len(texts)
    return answers
