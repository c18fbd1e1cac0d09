"""`switchyard quality score`: the teacher's verdict on the router's sample of live
model-route answers, per student version, with its 95% interval.

The router records a share of its model-route answers (`quality_sample_rate`) in a capped
stream. Scoring reads the whole stream, has the build's teacher label each sampled text once,
counts per student version how often the teacher gave the student's label, and stores the
result as the namespace's quality record, which the routers export as metrics. Rerunning it
scores the stream as it is then (the newest `quality_samples_max_len` answers).
"""

import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from prometheus_client import CollectorRegistry, Gauge, write_to_textfile
from rich.progress import Progress

from services.batch.errors import BatchError
from services.batch.settings import BatchSettings
from services.batch.store import connect, stream_fields
from services.batch.teacher import TeacherInfo, TeacherRuntime
from services.contracts.cache_schema import quality_record_key, quality_samples_key
from services.contracts.quality_schema import (
    AGREEMENT_GAUGES,
    QualityRecord,
    QualitySample,
    VersionAgreement,
)
from services.contracts.text import normalize_text

__all__ = ["ScoredSample", "Scoring", "read_samples", "score_samples", "write_quality_metrics"]


@dataclass(frozen=True)
class ScoredSample:
    sample: QualitySample
    teacher_label: str

    @property
    def agreed(self) -> bool:
        return self.sample.label == self.teacher_label


@dataclass
class Scoring:
    record: QualityRecord
    malformed: int
    scored: list[ScoredSample] = field(default_factory=list)


def read_samples(client: "redis.Redis", namespace: str) -> tuple[list[QualitySample], int]:
    """The namespace's sampled answers, oldest first, and how many entries were not samples."""
    samples: list[QualitySample] = []
    malformed = 0
    for fields in stream_fields(client, quality_samples_key(namespace)):
        try:
            samples.append(QualitySample.from_fields(fields))
        except ValueError:
            malformed += 1
    return samples, malformed


def score_samples(
    settings: BatchSettings,
    task: str,
    namespace: str,
    runtime: TeacherRuntime = "onnx",
    show_progress: bool = True,
    store: bool = True,
) -> Scoring:
    """Score the namespace's sample with the task's teacher and (with `store`) store the
    quality record."""
    info = TeacherInfo.read(settings.build_dir, task, runtime)
    client = connect(settings, settings.redis_timeout_seconds, cluster=settings.redis_cluster)
    try:
        samples, malformed = read_samples(client, namespace)
        unknown = sorted({s.label for s in samples} - set(info.labels))
        if unknown:
            raise BatchError(
                f"the sampled answers of namespace {namespace!r} use labels {unknown} that "
                f"task {task!r} does not have: is --namespace the task's?"
            )
        teacher_labels = _teacher_labels(info, [s.text for s in samples], settings, show_progress)
        scored = [ScoredSample(s, teacher_labels[normalize_text(s.text)]) for s in samples]
        record = QualityRecord(task, f"{info.model_name}:{info.version}", time.time(),
                               _agreements(scored))  # fmt: skip
        if samples and store:  # nothing sampled yet: the last record stays
            client.set(quality_record_key(namespace), record.to_json())
    finally:
        client.close()
    return Scoring(record, malformed, scored)


def _teacher_labels(
    info: TeacherInfo, texts: list[str], settings: BatchSettings, show_progress: bool
) -> dict[str, str]:
    # As the batch job labels them: the cache answers a text by its normalised form.
    unique = list(dict.fromkeys(normalize_text(text) for text in texts))
    if not unique:
        return {}
    labeller = info.labeller(settings.batch_size)
    labels: dict[str, str] = {}
    with Progress(disable=not show_progress, transient=True) as progress:
        job = progress.add_task("teacher labels the sample", total=len(unique))
        for start in range(0, len(unique), settings.batch_size):
            chunk = unique[start : start + settings.batch_size]
            for text, labelled in zip(chunk, labeller.label(chunk), strict=True):
                labels[text] = labelled.label
            progress.advance(job, len(chunk))
    return labels


def _agreements(scored: list[ScoredSample]) -> list[VersionAgreement]:
    counts: dict[tuple[str, str], list[int]] = {}
    for item in scored:
        tally = counts.setdefault((item.sample.model, item.sample.model_version), [0, 0])
        tally[0] += 1
        tally[1] += item.agreed
    return [
        VersionAgreement(model, version, samples, agreed)
        for (model, version), (samples, agreed) in sorted(counts.items())
    ]


def write_quality_metrics(path: Path, record: QualityRecord, namespace: str) -> None:
    """The record as Prometheus textfile metrics, written atomically."""
    registry = CollectorRegistry()
    names = ["task", "namespace", "model", "model_version"]
    gauges = [Gauge(name, text, names, registry=registry) for name, text in AGREEMENT_GAUGES]
    for version in record.versions:
        labels = (record.task, namespace, version.model, version.model_version)
        for gauge, value in zip(gauges, version.gauge_values(), strict=True):
            gauge.labels(*labels).set(value)
    scored_at = Gauge(
        "switchyard_quality_scored_timestamp_seconds", "When the last scoring ran (Unix time)",
        ["task", "namespace"], registry=registry,
    )  # fmt: skip
    scored_at.labels(record.task, namespace).set(record.scored_at)
    write_to_textfile(str(path), registry)
