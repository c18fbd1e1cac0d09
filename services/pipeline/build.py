"""`switchyard models build`: every task through data, teacher, student, export and evaluation.

Each stage writes into a scratch folder and is moved into place with a marker that records
the fingerprint of its inputs, so an interrupted build resumes at the first unfinished stage
and a rerun with the same settings redoes nothing. The model repository and the report are
published only when every task is complete.
"""

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from transformers.utils import logging as transformers_logging

from services.onnx_classifier import OnnxTextClassifier
from services.pipeline import assets
from services.pipeline.bias import probe_sentences
from services.pipeline.datasets import (
    Splits,
    load_splits,
    load_task,
    save_splits,
    split_examples,
    stratified_sample,
)
from services.pipeline.errors import PipelineError
from services.pipeline.evaluate import evaluate_task
from services.pipeline.export import FP32_FILE, INT8_FILE, TOKENIZER_FILE, export_student
from services.pipeline.profiles import BuildProfile
from services.pipeline.repository import publish_directory, render_config, student_config
from services.pipeline.student import distill_student
from services.pipeline.teacher import load_classifier, train_teacher
from services.pipeline.training import predict_logits

__all__ = ["BUILD_MARKER", "BuildOptions", "build_models"]

BUILD_MARKER = "switchyard-build.json"
MODEL_VERSION = "1"
Precision = Literal["auto", "int8", "fp32"]
# The bias probe asks about sentiment towards people; topic labels have no such reading.
_BIAS_PROBED_TASKS = {"sentiment"}


@dataclass(frozen=True)
class BuildOptions:
    out_dir: Path
    profile: BuildProfile
    tasks: list[str]
    seed: int
    precision: Precision


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _stage(work: Path, name: str, fingerprint: str, produce: Callable[[Path], None]) -> Path:
    """Run `produce` into a scratch folder unless the stage already finished with these inputs."""
    final = work / name
    marker = final / "_stage.json"
    if marker.exists() and _read_json(marker)["fingerprint"] == fingerprint:
        print(f"  {work.name}/{name}: up to date, reused")
        return final
    scratch = work / f".{name}.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    started = time.perf_counter()
    produce(scratch)
    _write_json(
        scratch / "_stage.json",
        {"fingerprint": fingerprint, "seconds": round(time.perf_counter() - started, 1)},
    )
    shutil.rmtree(final, ignore_errors=True)
    scratch.rename(final)
    return final


def _claim_output_dir(options: BuildOptions) -> None:
    """Refuse to write into a folder that holds something other than a Switchyard build."""
    out = options.out_dir
    if out.exists() and not out.is_dir():
        raise PipelineError(f"output path {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not (out / BUILD_MARKER).exists():
        raise PipelineError(
            f"output folder {out} holds files that are not a Switchyard build; "
            "choose an empty or new folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / BUILD_MARKER, {"tool": "switchyard", "profile": options.profile.name})


def _teacher_base(options: BuildOptions) -> Path:
    if options.profile.teacher_base == "all-mpnet-base-v2":
        return assets.mpnet_base_dir(options.out_dir / "work" / "base_models")
    return assets.minilm_l6_dir()


def _build_task(options: BuildOptions, task: str) -> dict[str, Any]:
    profile, seed = options.profile, options.seed
    budget = profile.tasks[task]
    work = options.out_dir / "work" / task
    settings = profile.model_dump(exclude={"tasks", "name"})

    def make_data(out: Path) -> None:
        loaded = load_task(task)
        full = split_examples(loaded.examples, seed)
        used = Splits(
            train=stratified_sample(full.train, budget.max_train, seed),
            validation=stratified_sample(full.validation, budget.max_eval, seed),
            test=stratified_sample(full.test, budget.max_eval, seed),
        )
        save_splits(used, out)
        _write_json(
            out / "data.json",
            {
                "labels": loaded.labels,
                "rows_read": loaded.rows_read,
                "unique_examples": len(loaded.examples),
                "duplicates_dropped": loaded.duplicates_dropped,
                "conflicting_labels_dropped": loaded.conflicts_dropped,
                "full_split_sizes": full.sizes(),
                "split_sizes": used.sizes(),
            },
        )

    data_key = _fingerprint("data", task, seed, budget.max_train, budget.max_eval)
    data_dir = _stage(work, "data", data_key, make_data)
    data_info = _read_json(data_dir / "data.json")
    labels: list[str] = data_info["labels"]
    splits = load_splits(data_dir)

    teacher_key = _fingerprint("teacher", data_key, settings, budget)
    teacher_dir = _stage(
        work,
        "teacher",
        teacher_key,
        lambda out: _write_json(
            out / "teacher.json",
            train_teacher(
                _teacher_base(options),
                profile.teacher_base,
                labels,
                splits.train,
                splits.validation,
                profile,
                budget,
                seed,
                out / "model",
                description=f"{task}: LoRA teacher",
            ),
        ),
    )
    probe = (
        probe_sentences(assets.holistic_bias_dir(), profile.bias_descriptors_per_group, seed)
        if task in _BIAS_PROBED_TASKS
        else []
    )

    def run_teacher(out: Path) -> None:
        model, tokenizer = load_classifier(teacher_dir / "model")
        inputs = {
            "train": [e.text for e in splits.train],
            "test": [e.text for e in splits.test],
            "probe": [s.text for s in probe],
        }
        for name, texts in inputs.items():
            if not texts:
                continue
            logits = predict_logits(
                model, tokenizer, texts, budget.max_length, description=f"{task}: teacher {name}"
            )
            np.save(out / f"{name}_logits.npy", logits)

    outputs_key = _fingerprint("teacher_outputs", teacher_key, len(probe))
    outputs_dir = _stage(work, "teacher_outputs", outputs_key, run_teacher)

    student_key = _fingerprint("student", outputs_key, settings, budget)
    student_dir = _stage(
        work,
        "student",
        student_key,
        lambda out: _write_json(
            out / "student.json",
            distill_student(
                labels,
                splits.train,
                np.load(outputs_dir / "train_logits.npy"),
                splits.validation,
                profile,
                budget,
                seed,
                out / "model",
                description=f"{task}: distilled student",
            ),
        ),
    )
    onnx_key = _fingerprint("onnx", student_key)
    onnx_dir = _stage(
        work,
        "onnx",
        onnx_key,
        lambda out: export_student(student_dir / "model", out, budget.max_length),
    )
    evaluation_key = _fingerprint("evaluation", onnx_key, outputs_key, profile.latency_samples)
    evaluation_dir = _stage(
        work,
        "evaluation",
        evaluation_key,
        lambda out: _write_json(
            out / "metrics.json",
            evaluate_task(
                labels,
                splits.test,
                budget.max_length,
                teacher_dir / "model",
                np.load(outputs_dir / "test_logits.npy"),
                student_dir / "model",
                onnx_dir,
                profile.latency_samples,
                probe,
                [int(i) for i in np.load(outputs_dir / "probe_logits.npy").argmax(1)]
                if probe
                else [],
            ),
        ),
    )
    metrics = _read_json(evaluation_dir / "metrics.json")
    teacher_info = _read_json(teacher_dir / "teacher.json")
    student_info = _read_json(student_dir / "student.json")
    return {
        "labels": labels,
        "split_sizes": data_info["split_sizes"],
        "data": {key: data_info[key] for key in data_info if key not in {"labels", "split_sizes"}},
        "max_length": budget.max_length,
        "teacher": {**teacher_info, **metrics["teacher"]},
        "student": {**student_info, **metrics["student"]},
        "onnx": metrics["onnx"],
        "bias": metrics["bias"],
        "served_precision": _served_precision(options.precision, metrics["onnx"]),
        "_onnx_dir": str(onnx_dir),
    }


def _served_precision(requested: Precision, onnx: dict[str, float]) -> str:
    """int8 unless asked otherwise, or unless quantization costs accuracy."""
    if requested != "auto":
        return requested
    keeps_accuracy = (
        onnx["int8_agreement_with_fp32"] >= 0.99
        and onnx["int8_test_accuracy"] >= onnx["fp32_test_accuracy"] - 0.01
    )
    return "int8" if keeps_accuracy else "fp32"


def _write_model_version(
    repository: Path, task: str, result: dict[str, Any], options: BuildOptions
) -> None:
    onnx_dir = Path(result["_onnx_dir"])
    precision = result["served_precision"]
    model_file = onnx_dir / (INT8_FILE if precision == "int8" else FP32_FILE)
    version_dir = repository / task / MODEL_VERSION
    version_dir.mkdir(parents=True)
    shutil.copyfile(model_file, version_dir / "model.onnx")
    shutil.copyfile(onnx_dir / TOKENIZER_FILE, version_dir / "tokenizer.json")
    _write_json(version_dir / "labels.json", result["labels"])
    input_names = OnnxTextClassifier(
        version_dir / "model.onnx", version_dir / "tokenizer.json"
    ).input_names
    config = student_config(
        task, input_names, len(result["labels"]), options.profile.max_batch_size
    )
    (repository / task / "config.pbtxt").write_text(render_config(config), encoding="utf-8")
    card = {key: value for key, value in result.items() if not key.startswith("_")}
    card.update(
        task=task,
        version=MODEL_VERSION,
        inputs=input_names,
        output="logits",
        profile=options.profile.name,
        seed=options.seed,
        sha256=hashlib.sha256((version_dir / "model.onnx").read_bytes()).hexdigest(),
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    _write_json(version_dir / "model_card.json", card)


def build_models(options: BuildOptions) -> dict[str, Any]:
    """Build every requested task, then publish the model repository and `report.json`."""
    for task in options.tasks:
        if task not in options.profile.tasks:
            known = ", ".join(options.profile.tasks)
            raise PipelineError(f"unknown task {task!r}; known tasks: {known}")
    _claim_output_dir(options)
    transformers_logging.set_verbosity_error()
    results = {task: _build_task(options, task) for task in options.tasks}

    repository = options.out_dir / "model_repository"
    staging = options.out_dir / ".model_repository.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    if repository.is_dir():
        # Tasks not rebuilt this time stay published as they were (hard links, no copies).
        for kept in repository.iterdir():
            if kept.name not in results:
                shutil.copytree(kept, staging / kept.name, copy_function=os.link)
    for task, result in results.items():
        _write_model_version(staging, task, result, options)
    publish_directory(staging, repository)

    report_path = options.out_dir / "report.json"
    previous = _read_json(report_path) if report_path.exists() else {}
    kept_tasks = (
        previous.get("tasks", {}) if previous.get("profile") == options.profile.name else {}
    )
    report = {
        "profile": options.profile.name,
        "seed": options.seed,
        "tasks": kept_tasks
        | {
            task: {key: value for key, value in result.items() if not key.startswith("_")}
            for task, result in results.items()
        },
    }
    partial_report = options.out_dir / ".report.json.partial"
    _write_json(partial_report, report)
    partial_report.replace(report_path)
    return report
