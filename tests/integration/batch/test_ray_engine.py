"""`switchyard batch run --engine ray` on a real local Ray cluster, against the in-process
engine on the same inputs: the same generation, one flip, resumable after a killed driver."""

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import redis

from router.client import Route
from services.contracts.cache_schema import (
    GENERATIONS_CHANNEL,
    CachedPrediction,
    batch_run_key,
    generation_key,
    generation_meta_key,
)
from services.processes.ray_head import RayHead
from tests.integration.batch.helpers import (
    batch_run,
    generation_keys,
    metrics,
    teacher_labels,
    write_jsonl,
)
from tests.integration.conftest import SWITCHYARD, RedisServer, RouterProcess
from tests.integration.router.helpers import client as client_of
from tests.integration.router.helpers import wait_for_generation


def inputs_of_every_kind(folder: Path, texts: list[str]) -> list[Path]:
    """A JSONL file, a CSV, a Parquet file and a folder of files, with bad rows and repeats."""
    jsonl = write_jsonl(folder / "queries.jsonl", texts[:40])
    with jsonl.open("a") as handle:
        handle.write('not json\n{"body": "no text"}\n' + json.dumps({"text": texts[0]}) + "\n")
    with (folder / "queries.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows(enumerate(texts[40:70]))
        writer.writerow([99, texts[41].upper()])
    parquet = folder / "queries.parquet"
    table = pa.table({"text": [*texts[70:100], None, "   "]})
    pq.write_table(table, parquet, row_group_size=8)
    logs = folder / "logs"
    (logs / "day=2").mkdir(parents=True)
    write_jsonl(logs / "day=1.jsonl", texts[100:120])
    (logs / "day=2" / "part-0.txt").write_text("\n".join(texts[120:140]) + "\n", encoding="utf-8")
    (logs / "_SUCCESS").write_text("")
    return [jsonl, folder / "queries.csv", parquet, logs]


def test_the_ray_engine_makes_the_in_process_generation_and_the_router_serves_it(
    tiny_build: Path,
    redis_server: RedisServer,
    router: RouterProcess,
    ray_head: RayHead,
    sentiment_texts: list[str],
    tmp_path: Path,
) -> None:
    texts = sentiment_texts[:140]
    inputs = [arg for path in inputs_of_every_kind(tmp_path, texts) for arg in ("--input", path)]
    common = ["--task", "sentiment", *map(str, inputs)]
    in_process = tmp_path / "in-process.prom"
    on_ray = tmp_path / "ray.prom"
    batch_run(
        tiny_build, redis_server.url, *common, "--namespace", "ray-baseline",
        "--metrics-file", str(in_process),
    )  # fmt: skip

    client = redis_server.client()
    pubsub = client.pubsub()
    pubsub.subscribe(GENERATIONS_CHANNEL)
    assert pubsub.get_message(timeout=2.0) is not None  # the subscription itself
    result = batch_run(
        tiny_build, redis_server.url, *common, "--engine", "ray", "--ray-address",
        ray_head.address, "--metrics-file", str(on_ray), "--write-every", "32",
        env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": ray_head.env["RAY_AUTH_TOKEN"]},
    )  # fmt: skip
    assert "outcome: flipped" in result.stdout
    announcements = []
    while (message := pubsub.get_message(timeout=0.5)) is not None:
        announcements.append(message["data"].decode())
    pubsub.close()
    generation = client.get(generation_key("sentiment")).decode()
    assert [a for a in announcements if a.startswith("sentiment ")] == [f"sentiment {generation}"]

    # The same rows read, skipped, repeated and written by both engines.
    baseline, ray_numbers = metrics(in_process), metrics(on_ray)
    for outcome in ("read", "skipped", "duplicate", "unique", "written"):
        key = f"switchyard_batch_rows:{outcome}"
        assert ray_numbers[key] == baseline[key], outcome
    assert ray_numbers["switchyard_batch_rows:unique"] == 140
    assert ray_numbers["switchyard_batch_generation_rows"] == 140

    # The same keys, labels and scores.
    expected = generation_keys(
        client, "ray-baseline", client.get(generation_key("ray-baseline")).decode()
    )
    stored = generation_keys(client, "sentiment", generation)
    assert set(stored) == set(expected) and len(stored) == 140
    for digest, raw in stored.items():
        one, other = CachedPrediction.from_json(raw), CachedPrediction.from_json(expected[digest])
        assert one.label == other.label
        assert np.allclose(
            [one.scores[k] for k in sorted(one.scores)],
            [other.scores[k] for k in sorted(one.scores)],
            atol=1e-4,
        )
    meta = client.hgetall(generation_meta_key("sentiment", generation))
    assert (meta[b"engine"], meta[b"rows"]) == (b"ray", b"140")

    wait_for_generation(router.address, "sentiment", generation)
    labels = teacher_labels(tiny_build, "sentiment", texts)
    with client_of(router.address) as router_client:
        for start in range(0, len(texts), 8):  # the router's batch limit
            answers = router_client.predict_batch("sentiment", texts[start : start + 8])
            assert [a.route for a in answers] == [Route.CACHE] * len(answers)
            assert [a.label for a in answers] == labels[start : start + 8]
            assert {a.cache_generation for a in answers} == {generation}


def test_a_killed_ray_driver_keeps_the_generation_and_a_rerun_labels_only_what_is_missing(
    tiny_build: Path,
    redis_server: RedisServer,
    ray_head: RayHead,
    sentiment_texts: list[str],
    tmp_path: Path,
) -> None:
    client: redis.Redis = redis_server.client()
    namespace = "ray-resume"
    client.set(generation_key(namespace), "keep-me")
    texts = sentiment_texts[:1200]
    queries = write_jsonl(tmp_path / "queries.jsonl", texts)
    args = ["--task", "sentiment", "--namespace", namespace, "--input", str(queries)]
    args += ["--engine", "ray", "--write-every", "40", "--ray-workers", "1"]
    command = [*SWITCHYARD, "batch", "run", "--build", str(tiny_build)]
    command += ["--redis-url", redis_server.url, "--no-progress", *args]
    env = {**os.environ, **ray_head.env}  # RAY_ADDRESS names the cluster, as in a RayJob
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 240
        written = 0
        while written < 80 and first.poll() is None and time.monotonic() < deadline:
            runs = client.scan_iter(batch_run_key(namespace, "*"))
            unfinished = [run for run in runs if not client.hexists(run, "finished_at")]
            if unfinished:
                generation = client.hget(unfinished[0], "generation").decode()
                written = len(generation_keys(client, namespace, generation))
            time.sleep(0.1)
        assert first.poll() is None, "the first run ended before it could be killed"
        assert written >= 80
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert client.get(generation_key(namespace)) == b"keep-me"

    metrics_file = tmp_path / "batch.prom"
    result = batch_run(
        tiny_build, redis_server.url, *args, "--metrics-file", str(metrics_file), env=ray_head.env
    )
    assert "outcome: flipped" in result.stdout
    assert client.get(generation_key(namespace)).decode() == generation
    numbers = metrics(metrics_file)
    resumed = numbers["switchyard_batch_rows:resumed"]
    assert resumed >= written
    assert resumed + numbers["switchyard_batch_rows:written"] == len(texts)
    stored = generation_keys(client, namespace, generation)
    assert len(stored) == len(texts)


def test_the_ray_engine_starts_a_local_ray_without_an_address(
    tiny_build: Path, redis_server: RedisServer, sentiment_texts: list[str], tmp_path: Path
) -> None:
    queries = write_jsonl(tmp_path / "queries.jsonl", sentiment_texts[:30])
    assert "RAY_ADDRESS" not in os.environ
    result = batch_run(
        tiny_build, redis_server.url, "--task", "sentiment", "--namespace", "ray-local",
        "--input", str(queries), "--engine", "ray",
    )  # fmt: skip
    assert "outcome: flipped" in result.stdout
    assert "engine" in result.stdout and "ray" in result.stdout


def test_bad_input_on_the_ray_engine_is_one_line_and_keeps_the_generation(
    tiny_build: Path, redis_server: RedisServer, ray_head: RayHead, tmp_path: Path
) -> None:
    client = redis_server.client()
    client.set(generation_key("ray-guarded"), "keep-me")
    good = write_jsonl(tmp_path / "good.jsonl", ["fine text"])
    (tmp_path / "archive.jsonl").write_bytes(b"\x1f\x8b\x08\x00\x00binary")
    common = ["--task", "sentiment", "--namespace", "ray-guarded", "--engine", "ray"]
    cases = {
        f"{tmp_path}/archive.jsonl is a binary file": ["--input", str(good), "--input",
                                                       str(tmp_path / "archive.jsonl")],
        "--shard is for the in-process engine": ["--input", str(good), "--shard", "0/2"],
        "--ray-address and --ray-workers go with --engine ray": [
            "--task", "sentiment", "--input", str(good), "--ray-workers", "2"],
    }  # fmt: skip
    for message, args in cases.items():
        options = args if args[0] == "--task" else [*common, *args]
        result = batch_run(tiny_build, redis_server.url, *options, check=False, env=ray_head.env)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr + result.stdout
    assert client.get(generation_key("ray-guarded")) == b"keep-me"
