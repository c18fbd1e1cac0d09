"""The batch job's run metrics in Prometheus text format, for node_exporter's textfile collector.

A run job is gone before Prometheus could scrape it, so it leaves its numbers in a file that
a collector serves. The generation's age is `time() - switchyard_batch_generation_created_
timestamp_seconds`, which stays right between runs (an age written by the job would not).
"""

from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from services.batch.job import BatchSummary

__all__ = ["write_metrics"]


def write_metrics(path: Path, summary: BatchSummary, finished_at: float) -> None:
    """Write the run's metrics to `path`, atomically (a temporary file, then a rename)."""
    registry = CollectorRegistry()
    labels = {
        "task": summary.task,
        "namespace": summary.namespace,
        "shard": f"{summary.shard.index}/{summary.shard.count}",
    }
    rows = Gauge(
        "switchyard_batch_rows",
        "Rows of the last batch run, by what became of them",
        [*labels, "outcome"],
        registry=registry,
    )
    counts = {
        "read": summary.rows_read,
        "misses_read": summary.misses_read,
        "top_misses_read": summary.top_misses_read,
        "skipped": sum(summary.skipped.values()),
        "duplicate": summary.duplicates,
        "unique": summary.unique,
        "in_shard": summary.in_shard,
        "resumed": summary.resumed,
        "written": summary.written,
        "misses_removed": summary.misses_removed,
    }
    for outcome, count in counts.items():
        rows.labels(**labels, outcome=outcome).set(count)
    gauges = {
        "switchyard_batch_duration_seconds": ("Wall time of the last run", summary.seconds),
        "switchyard_batch_input_bytes": (
            "Bytes of input files the last run read (a shard: its share only)",
            summary.bytes_read,
        ),
        "switchyard_batch_labelled_rows_per_second": (
            "Teacher labelling and writing rate of the last run",
            summary.rows_per_second,
        ),
        "switchyard_batch_last_run_timestamp_seconds": (
            "When the last run ended (Unix time)",
            finished_at,
        ),
        "switchyard_batch_generation_created_timestamp_seconds": (
            "When the generation of the last run was started (Unix time)",
            summary.generation_created_at,
        ),
        "switchyard_batch_week_misses": (
            "Uncached texts the routers counted over the 7 days before the run",
            summary.week_misses,
        ),
        "switchyard_batch_week_misses_answered": (
            "Of them, the ones the new generation answers (at least: of the texts counted)",
            summary.week_misses_answered,
        ),
        "switchyard_batch_generation_rows": (
            "Predictions in the generation, once all shards finished (0 before)",
            summary.generation_rows,
        ),
    }
    for name, (description, value) in gauges.items():
        Gauge(name, description, list(labels), registry=registry).labels(**labels).set(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
