"""The offline batch job's two rates: teacher rows/s and Redis keys/s, against their baselines.

    python -m bench.batch_job --build build [--task TASK] [--keys 100000] [--rows 512]
                              [--teacher-threads N]

Starts its own redis-server on a free loopback port. The write baseline is what any Python
job would do: pipelined SETs with a TTL, 1000 per round trip, with values of the same size.
The job's writer (script calls of 1000 keys, two in flight) runs on the same server in the
same run, rounds alternating; so do the verification pass and the JSON encoding of a
prediction. The teacher is timed on real texts of the task, model load excluded, in both
runtimes of the batch job: the ONNX export with onnxruntime (the default) against the merged
model with torch, rounds alternating, each one's best kept. Their ratio is made only if its
premise holds: both give the same label to every text (else it is reported as refused). The
job is bound by writing only if its keys/s fall below the teacher's rows/s.
"""

import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import redis
import typer
from rich.console import Console
from rich.table import Table

from services.batch.labels import Labeller
from services.batch.onnx_labeller import OnnxTeacherLabeller
from services.batch.store import GenerationStore
from services.batch.teacher import TeacherInfo
from services.contracts.build_layout import BuildLayout
from services.contracts.cache_schema import CachedPrediction, text_hash
from services.contracts.text import normalize_text
from services.pipeline.datasets import load_splits
from services.processes.redis_server import RedisServer

_TTL_SECONDS = 3600
_PIPELINE_CHUNK = 1000
_ROUNDS = 3


def prediction_values(count: int, labels: list[str]) -> list[tuple[str, str]]:
    """(digest, CachedPrediction JSON) pairs as the job writes them."""
    share = round(1 / len(labels), 6)
    scores = dict.fromkeys(labels, share)
    now = time.time()
    prediction = CachedPrediction(labels[0], scores, "bench-teacher", "1", now)
    return [(text_hash(f"query {i}"), prediction.to_json()) for i in range(count)]


def serialisations_per_second(count: int, labels: list[str]) -> float:
    scores = {label: 1 / len(labels) for label in labels}
    started = time.perf_counter()
    for _ in range(count):
        CachedPrediction(labels[0], scores, "bench-teacher", "1", time.time()).to_json()
    return count / (time.perf_counter() - started)


def pipelined_sets_per_second(client: "redis.Redis", values: list[tuple[str, str]]) -> float:
    started = time.perf_counter()
    for start in range(0, len(values), _PIPELINE_CHUNK):
        pipeline = client.pipeline(transaction=False)
        for key, value in values[start : start + _PIPELINE_CHUNK]:
            pipeline.set(f"plain:{key}", value, ex=_TTL_SECONDS)
        pipeline.execute()
    return len(values) / (time.perf_counter() - started)


def writer_per_second(
    store: GenerationStore, generation: str, values: list[tuple[str, str]]
) -> float:
    started = time.perf_counter()
    store.write(generation, values)
    return len(values) / (time.perf_counter() - started)


def _teacher_texts(info: TeacherInfo, layout: BuildLayout, rows: int) -> list[str]:
    examples = load_splits(layout.stage_dir(info.task, "data"))
    every = [*examples.train, *examples.validation, *examples.test]
    return [normalize_text(e.text) for e in every[:rows]]


def _rows_per_second(labeller: Labeller, texts: list[str]) -> float:
    started = time.perf_counter()
    labeller.label(texts)
    return len(texts) / (time.perf_counter() - started)


def teacher_rows_per_second(info: TeacherInfo, layout: BuildLayout, rows: int) -> float:
    """The teacher in `info`'s runtime, on the task's first `rows` texts, after a warm-up."""
    texts = _teacher_texts(info, layout, rows)
    labeller = info.labeller(batch_size=32)
    labeller.label(texts[:32])
    return _rows_per_second(labeller, texts)


@dataclass(frozen=True)
class TeacherRates:
    """The teacher's rows/s with torch and with onnxruntime, on the same texts."""

    rows: int
    torch_rows_per_s: float
    onnx_rows_per_s: float
    onnx_provider: str
    labels_differing: int
    max_score_diff: float
    premise: str
    """Why the ratio is refused; empty when its premise held."""

    @property
    def onnx_over_torch(self) -> float | None:
        return None if self.premise else self.onnx_rows_per_s / self.torch_rows_per_s


def teacher_runtimes(
    build: Path, task: str, rows: int, threads: int | None = None, rounds: int = _ROUNDS
) -> TeacherRates:
    """Both runtimes of the teacher on the task's first `rows` texts; the first pass of each
    is the warm-up and the premise check, then rounds alternate and each keeps its best."""
    torch_info = TeacherInfo.read(build, task, "torch")
    texts = _teacher_texts(torch_info, BuildLayout(build), rows)
    onnx = TeacherInfo.read(build, task, "onnx").labeller(32, threads)
    assert isinstance(onnx, OnnxTeacherLabeller)  # what the onnx runtime labels with
    torch = torch_info.labeller(32, threads)
    expected, got = torch.label(texts), onnx.label(texts)
    differing = sum(a.label != b.label for a, b in zip(expected, got, strict=True))
    score_diff = max(
        abs(a.scores[name] - b.scores[name])
        for a, b in zip(expected, got, strict=True)
        for name in a.scores
    )
    premise = f"{differing} of {len(texts)} labels differ between the runtimes" if differing else ""
    torch_rate = onnx_rate = 0.0
    for _ in range(rounds):
        torch_rate = max(torch_rate, _rows_per_second(torch, texts))
        onnx_rate = max(onnx_rate, _rows_per_second(onnx, texts))
    provider = onnx.provider if isinstance(onnx, OnnxTeacherLabeller) else "unknown"
    return TeacherRates(len(texts), torch_rate, onnx_rate, provider, differing, score_diff, premise)


def main(
    build: Annotated[Path, typer.Option(help="Build folder of `switchyard models build`.")],
    task: Annotated[
        str | None, typer.Option(help="Task whose teacher is timed [the build's first].")
    ] = None,
    keys: Annotated[int, typer.Option(help="Keys written per write measurement.")] = 100_000,
    rows: Annotated[int, typer.Option(help="Texts the teacher labels.")] = 512,
    teacher_threads: Annotated[
        int | None, typer.Option(help="CPU threads of each teacher runtime [one per core].")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write results JSON here.")] = None,
) -> None:
    layout = BuildLayout(build)
    report = layout.read_report()
    if task is None:
        if report is None or not report.tasks:
            raise SystemExit(f"no finished build at {build}; run `switchyard models build`")
        task = sorted(report.tasks)[0]
    info = TeacherInfo.read(build, task)
    values = prediction_values(keys, info.labels)
    with tempfile.TemporaryDirectory() as scratch, RedisServer(Path(scratch)) as server:
        client = server.client()
        store = GenerationStore(client, "bench", _TTL_SECONDS)
        # Alternate the two writers and keep each one's best round: the 2 cores are shared.
        baseline = writer = 0.0
        for round_ in range(_ROUNDS):
            baseline = max(baseline, pipelined_sets_per_second(client, values))
            writer = max(writer, writer_per_second(store, f"g{round_}", values))
            client.flushdb()
        store.write("g", values)
        started = time.perf_counter()
        absent = store.missing("g", [digest for digest, _ in values])
        verify = keys / (time.perf_counter() - started)
        if absent:
            raise SystemExit(f"the writer lost {len(absent)} keys")
    serialise = serialisations_per_second(keys, info.labels)
    # The teacher runs last: its worker threads would otherwise share the cores.
    teacher = teacher_runtimes(build, task, rows, teacher_threads)
    ratio = teacher.onnx_over_torch
    results: dict[str, Any] = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "keys": keys,
        "value_bytes": len(values[0][1]),
        "pipelined_sets_keys_per_s": baseline,
        "writer_keys_per_s": writer,
        "writer_vs_pipelined_sets": writer / baseline,
        "verify_keys_per_s": verify,
        "serialise_per_s": serialise,
        "teacher": {
            "task": task,
            "base_model": info.base_model,
            "threads": teacher_threads,
            # The batch job's default runtime.
            "rows_per_s": teacher.onnx_rows_per_s,
            **asdict(teacher),
            "onnx_over_torch": ratio,
        },
        "writer_vs_teacher": writer / teacher.onnx_rows_per_s,
    }
    table = Table(title=f"batch job rates ({keys} keys, {results['value_bytes']} B values)")
    for column in ("what", "rate", "vs baseline"):
        table.add_column(column, justify="left" if column == "what" else "right")
    table.add_row("pipelined SETs (baseline)", f"{baseline:,.0f} keys/s", "1.00x")
    table.add_row("batch job writer", f"{writer:,.0f} keys/s", f"{writer / baseline:.2f}x")
    table.add_row("batch job verify", f"{verify:,.0f} keys/s", f"{verify / baseline:.2f}x")
    table.add_row("CachedPrediction.to_json", f"{serialise:,.0f} values/s", "")
    console = Console(width=100)
    console.print(table)
    rates = Table(title=f"teacher {info.base_model} ({task}, {teacher.rows} texts)")
    for column in ("runtime", "rate", "vs torch"):
        rates.add_column(column, justify="left" if column == "runtime" else "right")
    rates.add_row("torch (baseline)", f"{teacher.torch_rows_per_s:,.1f} rows/s", "1.00x")
    rates.add_row(
        f"ONNX, {teacher.onnx_provider}",
        f"{teacher.onnx_rows_per_s:,.1f} rows/s",
        "refused" if ratio is None else f"{ratio:.2f}x",
    )
    console.print(rates)
    if ratio is None:
        print(f"ONNX / torch teacher: refused: {teacher.premise}")
    else:
        print(
            f"ONNX / torch teacher: {ratio:.2f}x (target >= 2x on CPU); same labels, scores "
            f"within {teacher.max_score_diff:.1e}"
        )
    print(f"writing is {writer / teacher.onnx_rows_per_s:,.0f}x faster than the teacher labels")
    if out is not None:
        out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    typer.run(main)
