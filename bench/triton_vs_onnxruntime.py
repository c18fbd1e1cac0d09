"""Triton against onnxruntime in-process, for the same student model and the same inputs.

    python -m bench.triton_vs_onnxruntime --repository build/model_repository [--task TASK]

Starts its own Triton on free loopback ports, measures batch-1 latency (p50/p99) of both
paths, then closed-loop throughput through Triton at several client concurrencies, with the
average batch Triton's dynamic batcher formed. Every phase is bounded in time.
"""

import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
import tritonclient.grpc as grpcclient
import typer
from rich.console import Console
from rich.table import Table

from services.contracts.model_repository import latest_version, model_names
from services.pipeline.onnx_classifier import OnnxTextClassifier
from services.triton.server import TritonServer, TritonSettings

# Query-like texts of a few lengths, so both paths see the same realistic token counts.
SAMPLE_TEXTS = [
    "stocks slide as oil prices jump",
    "the striker scored twice in the second half",
    "parliament votes on the new budget tomorrow",
    "new phone has a faster chip and a better camera",
    "the film won three awards at the festival last night",
    "interest rates held steady while inflation eased slightly over the quarter",
    "the minister resigned after the report on the failed rail project was published",
    "fans queued overnight for tickets to the band's only concert in the country this year",
]

Inputs = dict[str, npt.NDArray[np.int64]]


def _latencies_ms(
    call: Callable[[Inputs], object], inputs: list[Inputs], seconds: float
) -> list[float]:
    for item in inputs:
        call(item)  # warm-up
    durations = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for item in inputs:
            started = time.perf_counter()
            call(item)
            durations.append((time.perf_counter() - started) * 1000)
    return durations


def _summary(durations: list[float]) -> dict[str, float]:
    ordered = sorted(durations)
    return {
        "calls": len(ordered),
        "p50_ms": statistics.median(ordered),
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
    }


def _triton_call(port: int, task: str) -> Callable[[Inputs], object]:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")

    def call(inputs: Inputs) -> object:
        tensors = []
        for name, array in inputs.items():
            tensor = grpcclient.InferInput(name, list(array.shape), "INT64")
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        return client.infer(task, tensors).as_numpy("logits")

    return call


def _throughput(port: int, task: str, inputs: list[Inputs], clients: int, seconds: float) -> float:
    completed = [0] * clients
    deadline = time.monotonic() + seconds

    def worker(index: int) -> None:
        call = _triton_call(port, task)
        while time.monotonic() < deadline:
            call(inputs[completed[index] % len(inputs)])
            completed[index] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(completed) / (time.monotonic() - started)


def _batch_counts(port: int, task: str) -> tuple[int, int]:
    stats = grpcclient.InferenceServerClient(f"127.0.0.1:{port}").get_inference_statistics(
        task, as_json=True
    )
    model = stats["model_stats"][0]
    return int(model.get("inference_count", 0)), int(model.get("execution_count", 0))


def main(
    repository: Annotated[Path, typer.Option(help="Model repository to serve.")],
    task: Annotated[
        str | None, typer.Option(help="Model (task) to measure [the repository's first].")
    ] = None,
    seconds: Annotated[float, typer.Option(help="Seconds per measurement.")] = 5.0,
    concurrency: Annotated[str, typer.Option(help="Client counts for throughput.")] = "1,8,32",
    threads: Annotated[int, typer.Option(help="onnxruntime threads in-process.")] = 2,
    out: Annotated[Path | None, typer.Option(help="Write results JSON here.")] = None,
) -> None:
    if task is None:
        models = model_names(repository)
        if not models:
            raise SystemExit(f"no model in {repository}")
        task = models[0]
    files = latest_version(repository, task)
    # On CPU, as Triton's KIND_CPU student is: both sides must run on the same device.
    local = OnnxTextClassifier.of_version(files, threads=threads, provider="cpu")
    inputs = [local.encode([text]) for text in SAMPLE_TEXTS]
    settings = TritonSettings.on_free_ports(repository)
    server = TritonServer(settings)
    server.start()
    try:
        results: dict[str, Any] = {
            "task": task,
            "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
            "onnxruntime_in_process": _summary(_latencies_ms(local.run, inputs, seconds)),
            "triton_grpc": _summary(
                _latencies_ms(_triton_call(settings.grpc_port, task), inputs, seconds)
            ),
            "throughput": {},
        }
        for clients in (int(c) for c in concurrency.split(",")):
            before = _batch_counts(settings.grpc_port, task)
            rate = _throughput(settings.grpc_port, task, inputs, clients, seconds)
            after = _batch_counts(settings.grpc_port, task)
            executions = max(1, after[1] - before[1])
            results["throughput"][str(clients)] = {
                "requests_per_s": rate,
                "average_batch": (after[0] - before[0]) / executions,
            }
    finally:
        server.stop()
    results["triton_over_onnxruntime_p50"] = (
        results["triton_grpc"]["p50_ms"] / results["onnxruntime_in_process"]["p50_ms"]
    )
    sequential = results["throughput"].get("1", {}).get("requests_per_s")
    table = Table(title=f"Triton vs onnxruntime in-process ({task}, batch 1)")
    for column in ("path", "p50 ms", "p99 ms", "calls"):
        table.add_column(column)
    for name in ("onnxruntime_in_process", "triton_grpc"):
        row = results[name]
        table.add_row(name, f"{row['p50_ms']:.2f}", f"{row['p99_ms']:.2f}", str(row["calls"]))
    load = Table(title="Throughput through Triton (closed loop)")
    for column in ("clients", "req/s", "avg batch", "vs 1 client"):
        load.add_column(column)
    for clients, row in results["throughput"].items():
        ratio = f"{row['requests_per_s'] / sequential:.2f}x" if sequential else ""
        load.add_row(clients, f"{row['requests_per_s']:.0f}", f"{row['average_batch']:.1f}", ratio)
    console = Console()
    console.print(table)
    console.print(load)
    console.print(f"Triton p50 / in-process p50: {results['triton_over_onnxruntime_p50']:.2f}x")
    if out is not None:
        out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    typer.run(main)
