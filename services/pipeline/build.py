"""`switchyard models build`: every task through data, teacher, student, export and evaluation.

Each stage writes into a scratch folder and is moved into place with a marker that records
the fingerprint of its inputs, so an interrupted build resumes at the first unfinished stage
and a rerun with the same settings redoes nothing. The model repository and the report are
published only when every task is complete. The folder's layout is
`services.contracts.build_layout`'s; the report's fields are `services.contracts.build_report`'s.
"""

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from pydantic import BaseModel
from transformers.utils import logging as transformers_logging

from services.contracts.build_layout import (
    BuildLayout,
    StageMarker,
    read_stage_marker,
    write_stage_marker,
)
from services.contracts.build_report import (
    BuildReport,
    DataRecord,
    Evaluation,
    OnnxReport,
    Precision,
    StudentReport,
    StudentTraining,
    TaskReport,
    TeacherReport,
    TeacherTraining,
)
from services.contracts.model_repository import (
    CARD_FILE,
    CONFIG_FILE,
    LABELS_FILE,
    TOKENIZER_FILE,
    ModelCard,
    ModelVersion,
    render_config,
)
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
from services.pipeline.export import FP32_FILE, INT8_FILE, export_student
from services.pipeline.onnx_classifier import OnnxTextClassifier
from services.pipeline.profiles import BuildProfile, RequestedPrecision
from services.pipeline.repository import publish_directory, student_config
from services.pipeline.student import distill_student
from services.pipeline.teacher import load_classifier, train_teacher
from services.pipeline.training import predict_logits

__all__ = ["BuildOptions", "build_models"]

MODEL_VERSION = "1"
# The bias probe asks about sentiment towards people; topic labels have no such reading.
_BIAS_PROBED_TASKS = {"sentiment"}
Record = TypeVar("Record", bound=BaseModel)


@dataclass(frozen=True)
class BuildOptions:
    out_dir: Path
    profile: BuildProfile
    tasks: list[str]
    seed: int
    precision: RequestedPrecision


def _write_record(path: Path, record: BaseModel) -> None:
    path.write_text(record.model_dump_json(indent=2) + "\n", encoding="utf-8")


def _read_record(path: Path, kind: type[Record]) -> Record:
    return kind.model_validate_json(path.read_text(encoding="utf-8"))


def _fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _stage(final: Path, fingerprint: str, produce: Callable[[Path], None]) -> Path:
    """Run `produce` into a scratch folder unless the stage already finished with these inputs."""
    marker = read_stage_marker(final)
    if marker is not None and marker.fingerprint == fingerprint:
        print(f"  {final.parent.name}/{final.name}: up to date, reused")
        return final
    scratch = final.with_name(f".{final.name}.partial")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    started = time.perf_counter()
    produce(scratch)
    seconds = round(time.perf_counter() - started, 1)
    write_stage_marker(scratch, StageMarker(fingerprint=fingerprint, seconds=seconds))
    shutil.rmtree(final, ignore_errors=True)
    scratch.rename(final)
    return final


def _claim_output_dir(options: BuildOptions, layout: BuildLayout) -> None:
    """Refuse to write into a folder that holds something other than a Switchyard build."""
    out = options.out_dir
    if out.exists() and not out.is_dir():
        raise PipelineError(f"output path {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not layout.marker.exists():
        raise PipelineError(
            f"output folder {out} holds files that are not a Switchyard build; "
            "choose an empty or new folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    marker = {"tool": "switchyard", "profile": options.profile.name}
    layout.marker.write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def _teacher_base(options: BuildOptions, layout: BuildLayout) -> Path:
    if options.profile.teacher_base == "all-mpnet-base-v2":
        return assets.mpnet_base_dir(layout.base_models)
    return assets.minilm_l6_dir()


@dataclass(frozen=True)
class _BuiltTask:
    report: TaskReport
    onnx_dir: Path


def _build_task(options: BuildOptions, layout: BuildLayout, task: str) -> _BuiltTask:
    profile, seed = options.profile, options.seed
    budget = profile.tasks[task]
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
        record = DataRecord(
            labels=loaded.labels,
            rows_read=loaded.rows_read,
            unique_examples=len(loaded.examples),
            duplicates_dropped=loaded.duplicates_dropped,
            conflicting_labels_dropped=loaded.conflicts_dropped,
            full_split_sizes=full.sizes(),
            split_sizes=used.sizes(),
        )
        _write_record(out / "data.json", record)

    data_key = _fingerprint("data", task, seed, budget.max_train, budget.max_eval)
    data_dir = _stage(layout.stage_dir(task, "data"), data_key, make_data)
    data = _read_record(data_dir / "data.json", DataRecord)
    labels = data.labels
    splits = load_splits(data_dir)

    teacher_key = _fingerprint("teacher", data_key, settings, budget)
    teacher_dir = _stage(
        layout.stage_dir(task, "teacher"),
        teacher_key,
        lambda out: _write_record(
            out / "teacher.json",
            train_teacher(
                _teacher_base(options, layout),
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
    outputs_dir = _stage(layout.stage_dir(task, "teacher_outputs"), outputs_key, run_teacher)

    student_key = _fingerprint("student", outputs_key, settings, budget)
    student_dir = _stage(
        layout.stage_dir(task, "student"),
        student_key,
        lambda out: _write_record(
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
        layout.stage_dir(task, "onnx"),
        onnx_key,
        lambda out: export_student(student_dir / "model", out, budget.max_length),
    )
    evaluation_key = _fingerprint("evaluation", onnx_key, outputs_key, profile.latency_samples)
    evaluation_dir = _stage(
        layout.stage_dir(task, "evaluation"),
        evaluation_key,
        lambda out: _write_record(
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
    metrics = _read_record(evaluation_dir / "metrics.json", Evaluation)
    teacher = _read_record(teacher_dir / "teacher.json", TeacherTraining)
    student = _read_record(student_dir / "student.json", StudentTraining)
    report = TaskReport(
        labels=labels,
        split_sizes=data.split_sizes,
        data=data,
        max_length=budget.max_length,
        teacher=TeacherReport(**teacher.model_dump(), **metrics.teacher.model_dump()),
        student=StudentReport(**student.model_dump(), **metrics.student.model_dump()),
        onnx=metrics.onnx,
        bias=metrics.bias,
        served_precision=_served_precision(options.precision, metrics.onnx),
    )
    return _BuiltTask(report, onnx_dir)


def _served_precision(requested: RequestedPrecision, onnx: OnnxReport) -> Precision:
    """int8 unless asked otherwise, or unless quantization costs accuracy."""
    if requested != "auto":
        return requested
    keeps_accuracy = (
        onnx.int8_agreement_with_fp32 >= 0.99
        and onnx.int8_test_accuracy >= onnx.fp32_test_accuracy - 0.01
    )
    return "int8" if keeps_accuracy else "fp32"


def _write_model_version(
    repository: Path, task: str, built: _BuiltTask, options: BuildOptions
) -> None:
    report = built.report
    model_file = built.onnx_dir / (INT8_FILE if report.served_precision == "int8" else FP32_FILE)
    files = ModelVersion.of(repository, task, MODEL_VERSION)
    files.path.mkdir(parents=True)
    shutil.copyfile(model_file, files.model_file)
    shutil.copyfile(built.onnx_dir / TOKENIZER_FILE, files.tokenizer_file)
    (files.path / LABELS_FILE).write_text(
        json.dumps(report.labels, indent=2) + "\n", encoding="utf-8"
    )
    input_names = OnnxTextClassifier.of_version(files).input_names
    config = student_config(task, input_names, len(report.labels), options.profile.max_batch_size)
    (repository / task / CONFIG_FILE).write_text(render_config(config), encoding="utf-8")
    card = ModelCard(
        **report.model_dump(),
        task=task,
        version=MODEL_VERSION,
        inputs=input_names,
        profile=options.profile.name,
        seed=options.seed,
        sha256=hashlib.sha256(files.model_file.read_bytes()).hexdigest(),
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    _write_record(files.path / CARD_FILE, card)


def build_models(options: BuildOptions) -> BuildReport:
    """Build every requested task, then publish the model repository and `report.json`."""
    if not options.tasks:
        raise PipelineError("no task given; use --tasks topic,sentiment")
    for task in options.tasks:
        if task not in options.profile.tasks:
            known = ", ".join(options.profile.tasks)
            raise PipelineError(f"unknown task {task!r}; known tasks: {known}")
    layout = BuildLayout(options.out_dir)
    _claim_output_dir(options, layout)
    transformers_logging.set_verbosity_error()
    built = {task: _build_task(options, layout, task) for task in options.tasks}

    repository = layout.model_repository
    staging = repository.with_name(f".{repository.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    if repository.is_dir():
        # Tasks not rebuilt this time stay published as they were (hard links, no copies).
        for kept in repository.iterdir():
            if kept.name not in built:
                shutil.copytree(kept, staging / kept.name, copy_function=os.link)
    for task, result in built.items():
        _write_model_version(staging, task, result, options)
    publish_directory(staging, repository)

    try:
        previous = layout.read_report()
    except ValueError as exc:
        print(f"  {exc}: its tasks that were not rebuilt now are left out of the new report")
        previous = None
    kept_tasks = previous.tasks if previous and previous.profile == options.profile.name else {}
    report = BuildReport(
        profile=options.profile.name,
        seed=options.seed,
        tasks=kept_tasks | {task: result.report for task, result in built.items()},
    )
    partial_report = layout.report_file.with_name(f".{layout.report_file.name}.partial")
    _write_record(partial_report, report)
    partial_report.replace(layout.report_file)
    return report
