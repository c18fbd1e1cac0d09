"""What the batch job's integration tests share: inputs, runs of the CLI, and readings of
the results in Redis and in the metrics file."""

import json
import subprocess
from pathlib import Path

import redis
from prometheus_client.parser import text_string_to_metric_families

from services.contracts.text import normalize_text
from services.pipeline.teacher import load_classifier
from services.pipeline.training import predict_logits
from tests.integration.conftest import run_switchyard


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
