"""`switchyard batch run` end to end: the tiny build's teacher, real Redis, the real router."""

import csv
import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from router.client import Policy, RequestError, Route
from services.contracts.cache_schema import (
    CachedPrediction,
    batch_run_key,
    generation_key,
    generation_meta_key,
    misses_seen_key,
    misses_stream_key,
    prediction_key,
    text_hash,
)
from services.processes.ports import free_port
from services.processes.redis_cluster import RedisClusterServers
from services.triton.server import TritonServer
from tests.integration.batch.helpers import (
    batch_run,
    generation_keys,
    metrics,
    teacher_labels,
    write_jsonl,
)
from tests.integration.conftest import (
    SWITCHYARD,
    RedisServer,
    RouterProcess,
)
from tests.integration.router.helpers import client as client_of
from tests.integration.router.helpers import predict, publish_generation, wait_for_generation


def test_router_answers_the_batch_texts_from_the_cache(
    tiny_build: Path,
    redis_server: RedisServer,
    router: RouterProcess,
    sentiment_texts: list[str],
    tmp_path: Path,
) -> None:
    texts = sentiment_texts[:40]
    jsonl = write_jsonl(tmp_path / "queries.jsonl", texts[:30])
    with jsonl.open("a") as handle:
        handle.write('not json\n{"body": "no text"}\n' + json.dumps({"text": texts[0]}) + "\n")
    csv_file = tmp_path / "more.csv"
    with csv_file.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows(enumerate(texts[30:]))
    metrics_file = tmp_path / "metrics" / "batch.prom"
    result = batch_run(
        tiny_build, redis_server.url, "--task", "sentiment",
        "--input", str(jsonl), "--input", str(csv_file), "--metrics-file", str(metrics_file),
    )  # fmt: skip
    assert "outcome: flipped" in result.stdout
    numbers = metrics(metrics_file)
    assert numbers["switchyard_batch_rows:read"] == 43
    assert numbers["switchyard_batch_rows:skipped"] == 2
    assert numbers["switchyard_batch_rows:duplicate"] == 1
    assert numbers["switchyard_batch_rows:written"] == 40
    assert numbers["switchyard_batch_generation_rows"] == 40
    assert time.time() - numbers["switchyard_batch_generation_created_timestamp_seconds"] < 600

    client = redis_server.client()
    generation = client.get(generation_key("sentiment")).decode()
    meta = client.hgetall(generation_meta_key("sentiment", generation))
    assert meta[b"rows"] == b"40" and meta[b"model"] == b"sentiment-teacher"
    assert 0 < client.ttl(prediction_key("sentiment", generation, texts[0])) <= 8 * 86400
    wait_for_generation(router.address, "sentiment", generation)

    expected = teacher_labels(tiny_build, "sentiment", texts)
    for text, label in zip(texts, expected, strict=True):
        for variant in (text, f"  {text.upper()}\t", text.replace(" ", "  ")):
            answer = predict(router.address, "sentiment", variant)
            assert answer.route == Route.CACHE, variant
            assert (answer.label, answer.model) == (label, "sentiment-teacher")
            assert answer.cache_generation == generation
    outside = predict(router.address, "sentiment", sentiment_texts[-1])
    assert outside.route == Route.MODEL


def test_a_killed_run_resumes_its_generation_and_readers_never_fail(
    tiny_build: Path,
    redis_server: RedisServer,
    router: RouterProcess,
    sentiment_texts: list[str],
    tmp_path: Path,
) -> None:
    client = redis_server.client()
    watched = sentiment_texts[:20]
    old = publish_generation(
        client, "sentiment", ["negative", "neutral", "positive"], dict.fromkeys(watched, "neutral")
    )
    wait_for_generation(router.address, "sentiment", old)
    texts = sentiment_texts[:800]
    queries = write_jsonl(tmp_path / "queries.jsonl", texts)
    args = ["--task", "sentiment", "--input", str(queries), "--write-every", "50"]
    command = [*SWITCHYARD, "batch", "run", "--build", str(tiny_build)]
    command += ["--redis-url", redis_server.url, "--no-progress", *args]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        written = 0
        while written < 100 and first.poll() is None and time.monotonic() < deadline:
            runs = client.scan_iter(batch_run_key("sentiment", "*"))
            unfinished = [run for run in runs if not client.hexists(run, "finished_at")]
            if unfinished:
                generation = client.hget(unfinished[0], "generation").decode()
                written = len(generation_keys(client, "sentiment", generation))
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before it could be killed"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert client.get(generation_key("sentiment")).decode() == old

    answers: list[tuple[str, str, str]] = []
    failures: list[str] = []
    stop = threading.Event()

    def read_continuously() -> None:
        with client_of(router.address) as router_client:
            while not stop.is_set():
                for text in watched:
                    try:
                        reply = router_client.predict("sentiment", text)
                    except RequestError as exc:
                        failures.append(str(exc))
                        continue
                    answers.append((reply.cache_generation, reply.model, reply.label))

    reader = threading.Thread(target=read_continuously)
    reader.start()
    try:
        metrics_file = tmp_path / "batch.prom"
        result = batch_run(tiny_build, redis_server.url, *args, "--metrics-file", str(metrics_file))
        assert "outcome: flipped" in result.stdout
        new = client.get(generation_key("sentiment")).decode()
        assert new == generation
        wait_for_generation(router.address, "sentiment", new)
        time.sleep(0.5)
    finally:
        stop.set()
        reader.join()

    assert failures == []
    # A reader may fall back to the student when Redis answers slowly under this load (that is
    # the router's design); every cached answer must come whole from one generation.
    cached = [(g, m, label) for g, m, label in answers if m != "sentiment"]
    assert {(g, m) for g, m, _ in cached} == {(old, "teacher-test"), (new, "sentiment-teacher")}
    assert all(label == "neutral" for g, _, label in cached if g == old)
    assert {g for g, m, _ in answers if m == "sentiment"} <= {old, new}
    assert len(cached) > len(answers) / 2
    numbers = metrics(metrics_file)
    assert numbers["switchyard_batch_rows:resumed"] >= 100
    assert numbers["switchyard_batch_rows:resumed"] + numbers["switchyard_batch_rows:written"] == (
        len(texts)
    )
    stored = generation_keys(client, "sentiment", new)
    assert set(stored) == {text_hash(text) for text in texts}
    assert int(client.hget(generation_meta_key("sentiment", new), "rows")) == len(stored)
    assert {CachedPrediction.from_json(v).model for v in stored.values()} == {"sentiment-teacher"}


def test_include_misses_covers_the_queued_texts_and_empties_the_stream(
    tiny_build: Path,
    redis_server: RedisServer,
    router: RouterProcess,
    sentiment_texts: list[str],
    tmp_path: Path,
) -> None:
    client = redis_server.client()
    stream = misses_stream_key("sentiment")
    unsure = sentiment_texts[-9:-1]
    with client_of(router.address) as router_client:
        router_client.predict_batch(
            "sentiment", unsure, policy=Policy.MODEL_ONLY, min_confidence=1.0
        )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        queued = {fields[b"text"].decode() for _, fields in client.xrange(stream)}
        if queued >= set(unsure):
            break
        time.sleep(0.05)
    assert queued >= set(unsure)
    before = client.xlen(stream)

    metrics_file = tmp_path / "batch.prom"
    result = batch_run(
        tiny_build, redis_server.url, "--task", "sentiment", "--include-misses",
        "--metrics-file", str(metrics_file),
    )  # fmt: skip
    assert "outcome: flipped" in result.stdout
    numbers = metrics(metrics_file)
    assert numbers["switchyard_batch_rows:misses_read"] == before
    assert numbers["switchyard_batch_rows:misses_removed"] == before
    assert client.xlen(stream) == 0
    assert not any(client.sismember(misses_seen_key("sentiment"), text_hash(t)) for t in unsure)

    generation = client.get(generation_key("sentiment")).decode()
    wait_for_generation(router.address, "sentiment", generation)
    expected = teacher_labels(tiny_build, "sentiment", unsure)
    for text, label in zip(unsure, expected, strict=True):
        answer = predict(router.address, "sentiment", text)
        assert (answer.route, answer.label) == (Route.CACHE, label)


def test_two_shards_together_equal_one_unsharded_run(
    tiny_build: Path, redis_server: RedisServer, sentiment_texts: list[str], tmp_path: Path
) -> None:
    client = redis_server.client()
    queries = write_jsonl(tmp_path / "queries.jsonl", sentiment_texts[:120])
    common = ["--task", "sentiment", "--input", str(queries)]
    whole = batch_run(tiny_build, redis_server.url, *common, "--namespace", "whole")
    assert "outcome: flipped" in whole.stdout

    first = batch_run(
        tiny_build, redis_server.url, *common, "--namespace", "split", "--shard", "0/2",
        "--metrics-file", str(tmp_path / "shard-0.prom"),
    )  # fmt: skip
    assert "outcome: waiting for other shards" in first.stdout
    assert client.get(generation_key("split")) is None
    second = batch_run(
        tiny_build, redis_server.url, *common, "--namespace", "split", "--shard", "1/2",
        "--metrics-file", str(tmp_path / "shard-1.prom"),
    )  # fmt: skip
    assert "outcome: flipped" in second.stdout
    # Each shard read its half of the file's bytes and rows, not the whole file.
    shards = [metrics(tmp_path / f"shard-{i}.prom") for i in range(2)]
    rows = [shard["switchyard_batch_rows:read"] for shard in shards]
    read_bytes = [shard["switchyard_batch_input_bytes"] for shard in shards]
    assert sum(rows) == 120 and min(rows) > 30
    assert sum(read_bytes) == queries.stat().st_size
    assert max(read_bytes) < queries.stat().st_size * 0.75

    unsharded = generation_keys(client, "whole", client.get(generation_key("whole")).decode())
    sharded = generation_keys(client, "split", client.get(generation_key("split")).decode())
    assert len(unsharded) == 120
    assert set(sharded) == set(unsharded)
    for digest, raw in unsharded.items():
        one, other = CachedPrediction.from_json(raw), CachedPrediction.from_json(sharded[digest])
        assert one.label == other.label
        labels = sorted(one.scores)
        assert np.allclose([one.scores[k] for k in labels], [other.scores[k] for k in labels],
                           atol=1e-4)  # fmt: skip


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing file", "input file {tmp}/absent.jsonl does not exist"),
        ("binary file", "{tmp}/archive.jsonl is a binary file"),
        ("unknown suffix", "cannot tell the format of {tmp}/queries.xlsx"),
        ("not parquet", "cannot read {tmp}/queries.parquet as Parquet"),
        ("no text column", "has no column 'text' (columns: id, body)"),
        ("only bad rows", "none of the 2 rows holds a usable text"),
        ("unknown task", "unknown task 'weather'; tasks built in"),
        ("unreachable redis", "cannot reach Redis at 127.0.0.1:{port}"),
        ("no input", "nothing to read: pass --input FILE, --include-misses and/or --top-misses N"),
        ("score with the llm", "--score-samples needs the build's teacher (--teacher model)"),
        ("bad shard", "--shard must be i/n with 0 <= i < n, got '2/2'"),
    ],
)
def test_bad_input_fails_clearly_and_keeps_the_generation(
    tiny_build: Path, redis_server: RedisServer, tmp_path: Path, case: str, message: str
) -> None:
    client = redis_server.client()
    client.set(generation_key("guarded"), "keep-me")
    good = write_jsonl(tmp_path / "good.jsonl", ["fine text"])
    (tmp_path / "archive.jsonl").write_bytes(b"\x1f\x8b\x08\x00\x00binary")
    (tmp_path / "queries.parquet").write_bytes(b"PAR1")
    (tmp_path / "queries.xlsx").write_bytes(b"PK\x03\x04")
    (tmp_path / "table.csv").write_text("id,body\n1,hello\n")
    (tmp_path / "bad.jsonl").write_text('oops\n{"text": ""}\n')
    port = free_port()
    url = redis_server.url
    args = {
        "missing file": ["--input", str(tmp_path / "absent.jsonl")],
        "binary file": ["--input", str(good), "--input", str(tmp_path / "archive.jsonl")],
        "unknown suffix": ["--input", str(tmp_path / "queries.xlsx")],
        "not parquet": ["--input", str(tmp_path / "queries.parquet")],
        "no text column": ["--input", str(tmp_path / "table.csv")],
        "only bad rows": ["--input", str(tmp_path / "bad.jsonl")],
        "unknown task": ["--input", str(good)],
        "unreachable redis": ["--input", str(good)],
        "no input": [],
        "score with the llm": ["--input", str(good), "--score-samples", "--teacher", "llm-fewshot"],
        "bad shard": ["--input", str(good), "--shard", "2/2"],
    }[case]
    if case == "unreachable redis":
        url = f"redis://127.0.0.1:{port}/0"
    task = "weather" if case == "unknown task" else "sentiment"
    result = batch_run(
        tiny_build, url, "--task", task, "--namespace", "guarded", *args, check=False
    )
    assert result.returncode == 2
    assert message.format(tmp=tmp_path, port=port) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert client.get(generation_key("guarded")) == b"keep-me"


def test_on_a_redis_cluster_sharded_runs_flip_and_the_router_answers_from_every_master(
    tiny_build: Path,
    redis_cluster: RedisClusterServers,
    triton: TritonServer,
    sentiment_texts: list[str],
    tmp_path: Path,
) -> None:
    """Two shards and a misses run on a six-node cluster, read by a router in cluster mode."""
    texts = sentiment_texts[:60]
    queries = write_jsonl(tmp_path / "queries.jsonl", texts)
    client = redis_cluster.client()
    namespace = f"cluster-{free_port()}"
    router = RouterProcess(
        tmp_path, tiny_build / "model_repository", redis_cluster.url, triton.settings.grpc_port,
        redis_cluster=True,
        tasks={"sentiment": {"cache_namespace": namespace, "max_text_length": 280}},
    )  # fmt: skip
    common = ["--task", "sentiment", "--namespace", namespace, "--redis-cluster"]
    try:
        router.start()
        for shard in ("0/2", "1/2"):
            result = batch_run(
                tiny_build, redis_cluster.url, *common, "--input", str(queries), "--shard", shard
            )
        assert "outcome: flipped" in result.stdout
        generation = client.get(generation_key(namespace)).decode()
        keys = [prediction_key(namespace, generation, text) for text in texts]
        assert all(client.exists(key) for key in keys)
        per_master = {master.port: master.client().dbsize() for master in redis_cluster.masters()}
        assert len(per_master) == 3 and min(per_master.values()) > 0, per_master
        wait_for_generation(router.address, "sentiment", generation)
        expected = teacher_labels(tiny_build, "sentiment", texts)
        with client_of(router.address) as router_client:
            for start in range(0, len(texts), 8):
                answers = router_client.predict_batch("sentiment", texts[start : start + 8])
                assert [a.route for a in answers] == [Route.CACHE] * len(answers)
                assert [a.label for a in answers] == expected[start : start + 8]
            # The misses loop: a low-confidence model answer is queued, and the next run with
            # --include-misses covers it and empties the queue.
            unseen = sentiment_texts[-1]
            miss = router_client.predict("sentiment", unseen, min_confidence=1.0)
            assert miss.route == Route.MODEL
        stream = misses_stream_key(namespace)
        deadline = time.monotonic() + 10
        while client.xlen(stream) == 0:
            assert time.monotonic() < deadline, "the miss never reached the stream"
            time.sleep(0.05)
        result = batch_run(tiny_build, redis_cluster.url, *common, "--include-misses")
        assert "outcome: flipped" in result.stdout
        newer = client.get(generation_key(namespace)).decode()
        assert newer != generation and client.xlen(stream) == 0
        assert client.exists(prediction_key(namespace, newer, unseen))
        wait_for_generation(router.address, "sentiment", newer)
        assert predict(router.address, "sentiment", unseen).route == Route.CACHE
    finally:
        router.stop()
