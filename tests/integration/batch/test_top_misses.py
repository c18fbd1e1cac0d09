"""The most frequent uncached texts: a real router counts a skewed workload's misses in Redis,
`switchyard batch run --top-misses N` labels the N most frequent (and, with --score-samples,
judges the sampled model answers), and the same workload then finds them in the cache."""

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from router.client import Route
from services.batch.store import GenerationStore
from services.contracts.cache_schema import (
    miss_day,
    misses_count_key,
    quality_record_key,
    quality_samples_key,
)
from services.contracts.quality_schema import QualityRecord
from services.contracts.text import normalize_text
from services.processes.redis_server import RedisServer
from services.stack.router_process import RouterProcess
from services.triton.server import TritonServer
from tests.integration.batch.helpers import batch_run, metrics, namespaced_router

NAMESPACE = "top-misses-topic"
HOT = {
    "Shares rally as the central bank holds rates": 9,
    "The striker scores twice in the derby": 7,
    "A new phone launches with a larger battery": 5,
}
COLD = [f"A quiet local story number {i} about the weather" for i in range(12)]


@pytest.fixture()
def counting_router(
    tiny_build: Path, triton: TritonServer, redis_server: RedisServer, tmp_path: Path
) -> Iterator[RouterProcess]:
    """A router flushing its miss counts every 0.2 s and sampling every model answer, on a
    namespace of its own."""
    with namespaced_router(
        tmp_path, tiny_build, redis_server, triton.settings.grpc_port, "topic", NAMESPACE,
        top_misses_flush_seconds=0.2, quality_sample_rate=1.0,
    ) as router:  # fmt: skip
        yield router


def workload() -> list[str]:
    """The hot texts as often as HOT says, each cold one once, interleaved."""
    texts = [text for text, times in HOT.items() for _ in range(times)] + COLD
    random.Random(0).shuffle(texts)
    return texts


def test_the_top_misses_are_counted_covered_by_a_run_and_then_hit(
    tiny_build: Path, redis_server: RedisServer, counting_router: RouterProcess, tmp_path: Path
) -> None:
    sent = workload()
    with counting_router.client() as client:
        routes = [client.predict("topic", text).route for text in sent]
    assert set(routes) == {Route.MODEL}  # nothing cached yet
    count_key = misses_count_key(NAMESPACE, miss_day(time.time()))
    redis_client = redis_server.client()
    deadline = time.monotonic() + 10
    while int(redis_client.get(count_key) or 0) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.05)  # flushed off the request path
    store = GenerationStore(redis_client, NAMESPACE, 3600)
    ranked, total = store.top_misses(time.time())
    assert total == len(sent)
    # The most frequent first, with exact counts, as the cache keys them (normalised).
    assert ranked[: len(HOT)] == [(normalize_text(text), n) for text, n in HOT.items()]
    assert {text for text, _ in ranked[len(HOT) :]} == {normalize_text(text) for text in COLD}

    metrics_file = tmp_path / "batch.prom"
    result = batch_run(
        tiny_build, redis_server.url, "--task", "topic", "--namespace", NAMESPACE,
        "--top-misses", str(len(HOT)), "--metrics-file", str(metrics_file), "--score-samples",
    )  # fmt: skip
    assert "flipped" in result.stdout
    record = QualityRecord.from_json(redis_client.get(quality_record_key(NAMESPACE)))
    (version,) = record.versions
    assert version.samples == redis_client.xlen(quality_samples_key(NAMESPACE)) == len(sent)
    assert f"on {version.agreed} of {version.samples} sampled answers" in result.stdout
    published = metrics(metrics_file)
    assert published["switchyard_batch_rows:top_misses_read"] == len(HOT)
    assert published["switchyard_batch_week_misses"] == len(sent)
    assert published["switchyard_batch_week_misses_answered"] == sum(HOT.values())

    with counting_router.client() as client:
        deadline = time.monotonic() + 10  # the router follows the flip it is told of
        while client.predict("topic", next(iter(HOT))).route is not Route.CACHE:
            assert time.monotonic() < deadline, "the router never followed the flip"
            time.sleep(0.1)
        again = [client.predict("topic", text) for text in sent]
    hits = [text for text, answer in zip(sent, again, strict=True) if answer.route is Route.CACHE]
    # The hit ratio of the same workload rises from 0 to the hot texts' share of it.
    assert len(hits) == sum(HOT.values())
    assert set(hits) == set(HOT)
