"""ONNX on CUDA against CPU: the ONNX teacher's rows/s and the student's single-text latency.

    python -m bench.gpu_check --build build [--task TASK] [--rows 256] [--calls 200]
                              [--out FILE] [--require-cuda]

For a machine with the `gpu` extra (onnxruntime-gpu). Sessions come from
`services.contracts.onnx_session`, so CUDA is used exactly where the batch job would use it.
On CUDA it also checks that the teacher labels as on CPU (largest logit difference, labels
that differ). Where CUDA cannot run (the CPU wheel, no GPU, no driver, no CUDA libraries), it
says so in one line, measures CPU only and exits 0.

Exit codes: 0 measured (with or without CUDA); 2 no usable build (no ONNX teacher: rebuild
with `switchyard models build`); 3 CUDA not usable and `--require-cuda` given.

It needs only onnxruntime (or onnxruntime-gpu), numpy, tokenizers and this package: it reads
the build's files through the contracts, and parses its options with argparse rather than
typer, so it runs in the small environment of `.ci/gpu-extra-check` (no torch, no pydantic).
"""

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.contracts import onnx_session
from services.contracts.build_layout import (
    ONNX_TOKENIZER_FILE,
    STUDENT_FP32_FILE,
    STUDENT_INT8_FILE,
    TEACHER_ONNX_FILE,
    BuildLayout,
)
from services.contracts.model_io import OUTPUT_NAME, TextEncoder
from services.contracts.onnx_session import (
    CudaUnavailable,
    ProviderPreference,
    create_session,
    import_onnxruntime,
    session_provider,
)
from services.contracts.text import normalize_text

EXIT_NO_BUILD = 2
EXIT_NO_CUDA = 3
_BATCH = 32
_ROUNDS = 3


class _Model:
    """One ONNX graph with its serving tokenizer, on one provider."""

    def __init__(self, model_file: Path, provider: ProviderPreference) -> None:
        self._session = create_session(model_file, provider)
        self.provider = session_provider(self._session)
        inputs = [node.name for node in self._session.get_inputs()]
        self._encoder = TextEncoder.from_file(model_file.with_name(ONNX_TOKENIZER_FILE), inputs)

    def logits(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        result: npt.NDArray[np.float32] = self._session.run(
            [OUTPUT_NAME], self._encoder.encode(texts)
        )[0]
        return result


@dataclass(frozen=True)
class _Rates:
    teacher_rows_per_s: float
    student_fp32_p50_ms: float
    student_int8_p50_ms: float


def _teacher_logits(model: _Model, texts: list[str]) -> npt.NDArray[np.float32]:
    """The batch job's way: batches of similar lengths."""
    order = np.argsort([len(text) for text in texts], kind="stable")
    chunks = [
        model.logits([texts[i] for i in order[start : start + _BATCH]])
        for start in range(0, len(texts), _BATCH)
    ]
    by_length = np.concatenate(chunks)
    logits: npt.NDArray[np.float32] = np.empty_like(by_length)
    logits[order] = by_length
    return logits


def _rows_per_second(model: _Model, texts: list[str]) -> float:
    best = 0.0
    for _ in range(_ROUNDS):
        started = time.perf_counter()
        _teacher_logits(model, texts)
        best = max(best, len(texts) / (time.perf_counter() - started))
    return best


def _p50_ms(model: _Model, texts: list[str], calls: int) -> float:
    model.logits(texts[:1])
    durations = []
    for index in range(calls):
        started = time.perf_counter()
        model.logits([texts[index % len(texts)]])
        durations.append(time.perf_counter() - started)
    return statistics.median(durations) * 1000


def _measure(
    layout: BuildLayout,
    task: str,
    teacher: _Model,
    texts: list[str],
    calls: int,
    provider: ProviderPreference,
) -> _Rates:
    student = layout.student_onnx_dir(task)
    return _Rates(
        teacher_rows_per_s=_rows_per_second(teacher, texts),
        student_fp32_p50_ms=_p50_ms(_Model(student / STUDENT_FP32_FILE, provider), texts, calls),
        student_int8_p50_ms=_p50_ms(_Model(student / STUDENT_INT8_FILE, provider), texts, calls),
    )


def _test_texts(layout: BuildLayout, task: str, rows: int) -> list[str]:
    lines = layout.split_file(task, "test").read_text(encoding="utf-8").splitlines()
    return [normalize_text(json.loads(line)["text"]) for line in lines[:rows]]


def _usable_build(layout: BuildLayout, task: str | None) -> tuple[str, Path]:
    """The task and its ONNX teacher file; SystemExit(EXIT_NO_BUILD) when there is none."""
    tasks = layout.built_teachers()
    if not tasks or (task is not None and task not in tasks):
        print(f"no built teacher {task or ''} in {layout.root}; run `switchyard models build`")
        raise SystemExit(EXIT_NO_BUILD)
    task = task or tasks[0]
    teacher_file = layout.teacher_onnx_dir(task) / TEACHER_ONNX_FILE
    if not teacher_file.is_file():
        print(f"the build in {layout.root} has no ONNX teacher for {task}; rerun the build")
        raise SystemExit(EXIT_NO_BUILD)
    return task, teacher_file


def _row(what: str, cpu: float, cuda: float | None, unit: str, faster_is_higher: bool) -> str:
    if cuda is None:
        return f"{what:<34} {cpu:>12.2f} {'n/a':>12} {'n/a':>10}  {unit}"
    speedup = cuda / cpu if faster_is_higher else cpu / cuda
    return f"{what:<34} {cpu:>12.2f} {cuda:>12.2f} {speedup:>9.2f}x  {unit}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, required=True, help="folder of a finished build")
    parser.add_argument("--task", help="task whose models are timed [the build's first]")
    parser.add_argument("--rows", type=int, default=256, help="test texts the teacher labels")
    parser.add_argument("--calls", type=int, default=200, help="single-text student calls")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--require-cuda", action="store_true", help=f"exit {EXIT_NO_CUDA} when CUDA cannot run"
    )
    args = parser.parse_args(argv)
    # The provider choice is printed below as this check's own line, so not logged twice.
    logging.getLogger(onnx_session.__name__).setLevel(logging.ERROR)

    layout = BuildLayout(args.build)
    task, teacher_file = _usable_build(layout, args.task)
    texts = _test_texts(layout, task, args.rows)
    ort = import_onnxruntime()
    print(
        f"onnxruntime {ort.__version__} ({ort.get_device()} build), providers available: "
        f"{', '.join(ort.get_available_providers())}"
    )
    cpu_teacher = _Model(teacher_file, "cpu")
    cuda_teacher: _Model | None
    try:
        cuda_teacher = _Model(teacher_file, "cuda")
        print(f"CUDA: usable, the ONNX sessions run on {cuda_teacher.provider}")
    except CudaUnavailable as exc:
        cuda_teacher = None
        print(f"CUDA: not usable, measuring CPU only ({exc})")

    results: dict[str, Any] = {
        "task": task,
        "onnxruntime": ort.__version__,
        "available_providers": ort.get_available_providers(),
        "cuda_usable": cuda_teacher is not None,
        "cuda_reason": getattr(onnx_session.cuda_verdict(), "reason", ""),
        "texts": len(texts),
        "cpu": asdict(_measure(layout, task, cpu_teacher, texts, args.calls, "cpu")),
        "cuda": None,
    }
    if cuda_teacher is not None:
        results["cuda"] = asdict(_measure(layout, task, cuda_teacher, texts, args.calls, "cuda"))
        cpu_logits = _teacher_logits(cpu_teacher, texts)
        cuda_logits = _teacher_logits(cuda_teacher, texts)
        results["cuda_vs_cpu_max_logit_diff"] = float(np.abs(cuda_logits - cpu_logits).max())
        results["cuda_vs_cpu_labels_differing"] = int(
            (cuda_logits.argmax(1) != cpu_logits.argmax(1)).sum()
        )

    cpu, cuda = results["cpu"], results["cuda"] or {}
    print(f"{task}: {'':<28} {'CPU':>12} {'CUDA':>12} {'CUDA/CPU':>10}")
    print(
        _row(
            f"ONNX teacher ({len(texts)} texts, batch {_BATCH})",
            cpu["teacher_rows_per_s"],
            cuda.get("teacher_rows_per_s"),
            "rows/s",
            True,
        )
    )
    for precision in ("fp32", "int8"):
        key = f"student_{precision}_p50_ms"
        print(_row(f"student {precision}, 1 text, p50", cpu[key], cuda.get(key), "ms", False))
    if cuda_teacher is not None:
        print(
            f"teacher on CUDA vs CPU: max |logit diff| {results['cuda_vs_cpu_max_logit_diff']:.1e},"
            f" {results['cuda_vs_cpu_labels_differing']} of {len(texts)} labels differ"
        )
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return EXIT_NO_CUDA if args.require_cuda and cuda_teacher is None else 0


if __name__ == "__main__":
    sys.exit(main())
