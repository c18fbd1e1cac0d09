"""Quality on live traffic: a real router samples its model-route answers, `switchyard
quality score` has the teacher judge them, and the published agreement is checked against
the teacher's labels computed here, independently, on the same texts."""

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.contracts.cache_schema import quality_record_key
from services.contracts.quality_schema import QualityRecord, wilson_interval
from services.pipeline.datasets import load_splits
from services.processes.redis_server import RedisServer
from services.stack.router_process import RouterProcess
from services.triton.server import TritonServer
from tests.integration.batch.helpers import (
    metrics,
    namespaced_router,
    sampled_model_answers,
    teacher_labels,
)
from tests.integration.conftest import run_switchyard

NAMESPACE = "quality-sentiment"


@pytest.fixture()
def sampling_router(
    tiny_build: Path, triton: TritonServer, redis_server: RedisServer, tmp_path: Path
) -> Iterator[RouterProcess]:
    """A router that records every model-route answer, on a namespace of its own."""
    with namespaced_router(
        tmp_path, tiny_build, redis_server, triton.settings.grpc_port, "sentiment", NAMESPACE,
        quality_sample_rate=1.0, quality_poll_seconds=0.5,
    ) as router:  # fmt: skip
        yield router


def test_scoring_publishes_the_teachers_agreement_with_the_sampled_answers(
    tiny_build: Path, redis_server: RedisServer, sampling_router: RouterProcess, tmp_path: Path
) -> None:
    texts = [e.text[:250] for e in load_splits(tiny_build / "work" / "sentiment" / "data").test]
    texts = list(dict.fromkeys(texts))[:40]
    answers = sampled_model_answers(sampling_router, redis_server, "sentiment", NAMESPACE, texts)
    client_redis = redis_server.client()

    metrics_file = tmp_path / "quality.prom"
    result = run_switchyard(
        "quality", "score", "--task", "sentiment", "--namespace", NAMESPACE,
        "--build", str(tiny_build), "--redis-url", redis_server.url, "--no-progress",
        "--metrics-file", str(metrics_file),
    )  # fmt: skip
    assert "student vs teacher" in result.stdout

    record = QualityRecord.from_json(client_redis.get(quality_record_key(NAMESPACE)))
    (version,) = record.versions
    assert (version.model, version.model_version) == (answers[0].model, answers[0].model_version)
    expected = teacher_labels(tiny_build, "sentiment", texts)
    agreed = sum(a.label == t for a, t in zip(answers, expected, strict=True))
    assert (version.samples, version.agreed) == (len(texts), agreed)
    low, high = version.interval
    assert (low, high) == wilson_interval(agreed, len(texts))
    assert low <= agreed / len(texts) <= high
    assert high - low > 0.15  # 40 samples: an interval this wide, not a point
    published = metrics(metrics_file)
    assert published["switchyard_quality_student_agreement"] == pytest.approx(agreed / len(texts))
    assert published["switchyard_quality_scored_samples"] == len(texts)
    assert json.loads(record.to_json())["teacher"].startswith("sentiment-teacher:")
    # The router exports the record it finds in Redis.
    url = f"http://127.0.0.1:{sampling_router.metrics_port}/metrics"
    labels = {"task": "sentiment", "model_version": version.model_version}
    exported = None
    deadline = time.monotonic() + 10
    while exported is None and time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=5) as response:
            families = text_string_to_metric_families(response.read().decode())
        exported = next(
            (
                sample.value
                for family in families
                for sample in family.samples
                if sample.name == "switchyard_quality_student_agreement" and sample.labels == labels
            ),
            None,
        )
        time.sleep(0.2)
    assert exported == pytest.approx(agreed / len(texts))


def test_calibration_reports_each_thresholds_queue_share_and_error_rates(
    tiny_build: Path, redis_server: RedisServer, sampling_router: RouterProcess
) -> None:
    texts = [e.text[:250] for e in load_splits(tiny_build / "work" / "sentiment" / "data").test]
    texts = list(dict.fromkeys(texts))[:30]
    answers = sampled_model_answers(sampling_router, redis_server, "sentiment", NAMESPACE, texts)
    # One threshold that keeps every answer, one at their median confidence.
    middle = round(sorted(a.score for a in answers)[len(answers) // 2], 2)
    thresholds = (0.3, middle)
    result = run_switchyard(
        "quality", "calibrate", "--task", "sentiment", "--namespace", NAMESPACE,
        "--build", str(tiny_build), "--redis-url", redis_server.url, "--no-progress",
        "--thresholds", ",".join(map(str, thresholds)), "--target-error", "1.0",
    )  # fmt: skip
    expected = teacher_labels(tiny_build, "sentiment", texts)
    judged = [(a.score, a.label == t) for a, t in zip(answers, expected, strict=True)]
    for threshold in thresholds:
        below = [agreed for score, agreed in judged if score < threshold]
        above = [agreed for score, agreed in judged if score >= threshold]
        queued = f"{len(below) / len(texts):.1%}"
        error_below = f"{below.count(False) / len(below):.1%}" if below else "-"
        error_above = f"{above.count(False) / len(above):.1%}" if above else "-"
        rows = [
            [cell for cell in line.split() if cell != "│"]
            for line in result.stdout.splitlines()
            if f" {threshold:.2f} " in line
        ]
        assert rows and rows[0][:4] == [f"{threshold:.2f}", queued, error_below, error_above], (
            result.stdout
        )
    # Any error rate meets a target of 100%: the lowest threshold, which keeps all, is named.
    assert "lowest threshold whose unqueued answers err at most 100.0% (95% high): 0.30" in (
        " ".join(result.stdout.split())
    )
    # Calibrating only reads: no quality record was stored.
    assert redis_server.client().get(quality_record_key(NAMESPACE)) is None


def test_scoring_bad_input_is_one_line_and_exit_2(
    tiny_build: Path, redis_server: RedisServer
) -> None:
    result = run_switchyard(
        "quality", "score", "--task", "weather", "--build", str(tiny_build),
        "--redis-url", redis_server.url, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "unknown task 'weather'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    empty = run_switchyard(
        "quality", "score", "--task", "topic", "--namespace", "quality-nothing-yet",
        "--build", str(tiny_build), "--redis-url", redis_server.url, "--no-progress",
    )  # fmt: skip
    assert "no sampled answers" in empty.stdout
