"""`switchyard models build`: every task through data, teacher, its ONNX export, student, export
and evaluation.

Each task comes from its task file (`services.pipeline.task_file`); every task's data is
read and checked before anything is trained or written.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from transformers.utils import logging as transformers_logging

from services.contracts.build_layout import (
    ONNX_TOKENIZER_FILE,
    SPLITS,
    STUDENT_FP32_FILE,
    STUDENT_INT8_FILE,
    TEACHER_ONNX_FILE,
    TEACHER_ONNX_RECORD,
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
    PromptRecord,
    RequestedPrecision,
    ServingRecord,
    StudentReport,
    StudentTraining,
    TaskReport,
    TeacherExport,
    TeacherReport,
    TeacherTraining,
)
from services.contracts.model_repository import (
    CARD_FILE,
    CONFIG_FILE,
    LABELS_FILE,
    ModelCard,
    ModelVersion,
    latest_version,
    render_config,
    version_dirs,
)
from services.pipeline import assets
from services.pipeline.bias import ProbeSentence, probe_sentences, read_templates
from services.pipeline.datasets import (
    Example,
    Splits,
    label_counts,
    load_separate,
    load_task,
    save_splits,
    split_examples,
    stratified_sample,
)
from services.pipeline.errors import PipelineError
from services.pipeline.evaluate import evaluate_task, max_torch_onnx_diff
from services.pipeline.export import export_student, export_teacher
from services.pipeline.onnx_classifier import OnnxTextClassifier
from services.pipeline.repository import publish_directory, student_config
from services.pipeline.student import distill_student
from services.pipeline.task_file import (
    PACKAGED_STUDENT,
    PACKAGED_TEACHERS,
    TaskFile,
    TeacherSpec,
    load_task_file,
)
from services.pipeline.teacher import default_target_modules, load_classifier, train_teacher
from services.pipeline.training import predict_logits

__all__ = ["BuildOptions", "build_models"]

Record = TypeVar("Record", bound=BaseModel)


@dataclass(frozen=True)
class BuildOptions:
    out_dir: Path
    profile: str
    task_files: list[Path]
    seed: int
    precision: RequestedPrecision | None = None
    """Overrides every task's `serving.precision` when given."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Task-file values that win over every file (e.g. smaller budgets for tests)."""


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
    try:
        produce(scratch)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
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
    marker = {"tool": "switchyard", "profile": options.profile}
    layout.marker.write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class _PreparedTask:
    """A task whose data passed every check, ready to train: nothing is written yet."""

    spec: TaskFile
    splits: Splits
    record: DataRecord
    probe_templates: list[str] | None

    @property
    def labels(self) -> list[str]:
        return self.record.labels


def _check_model_folder(path: str, role: str) -> dict[str, Any]:
    """The config of a local Hugging Face model folder; PipelineError when it is none."""
    config = Path(path) / "config.json"
    try:
        loaded: dict[str, Any] = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        packaged = ", ".join(PACKAGED_TEACHERS if role == "teacher" else (PACKAGED_STUDENT,))
        raise PipelineError(
            f"{role}.base {path} is neither a packaged model ({packaged}) nor a Hugging Face "
            "model folder (no readable config.json)"
        ) from None
    return loaded


def _prepare(spec: TaskFile, seed: int) -> _PreparedTask:
    """Read and check the task's data and model choices, before anything is trained."""
    source = spec.data
    if source.file is not None:
        loaded = load_task(source)
        split_seed = seed if source.seed is None else source.seed
        full = split_examples(loaded.examples, split_seed, source.split)
    else:
        loaded, full = load_separate(source)
    used = Splits(
        train=_capped(full.train, source.max_train, seed),
        validation=_capped(full.validation, source.max_validation, seed),
        test=_capped(full.test, source.max_test, seed),
    )
    if spec.teacher.base not in PACKAGED_TEACHERS:
        config = _check_model_folder(spec.teacher.base, "teacher")
        if spec.teacher.target_modules is None:
            default_target_modules(str(config.get("model_type")))
    if spec.student.teacher_layers is None and spec.student.base != PACKAGED_STUDENT:
        _check_model_folder(spec.student.base, "student")
    probe = spec.bias_probe
    templates = None if probe.templates is None else read_templates(Path(probe.templates))
    record = DataRecord(
        labels=loaded.labels,
        rows_read=loaded.rows_read,
        unique_examples=len(loaded.examples),
        duplicates_dropped=loaded.duplicates_dropped,
        conflicting_labels_dropped=loaded.conflicts_dropped,
        full_split_sizes=full.sizes(),
        split_sizes=used.sizes(),
        label_counts=label_counts(used, loaded.labels),
    )
    return _PreparedTask(spec, used, record, templates)


def _capped(examples: list[Example], cap: int | None, seed: int) -> list[Example]:
    return examples if cap is None else stratified_sample(examples, cap, seed)


def _data_table(task: _PreparedTask) -> Table:
    record = task.record
    table = Table(title=f"{task.spec.name}: examples per split")
    table.add_column("label")
    for split in SPLITS:
        table.add_column(split, justify="right")
    for label in task.labels:
        table.add_row(label, *(str(record.label_counts[split][label]) for split in SPLITS))
    table.add_row("all", *(str(record.split_sizes[split]) for split in SPLITS), end_section=True)
    return table


def _teacher_base(spec: TeacherSpec, layout: BuildLayout) -> Path:
    if spec.base == "all-mpnet-base-v2":
        return assets.mpnet_base_dir(layout.base_models)
    if spec.base == "all-MiniLM-L6-v2":
        return assets.minilm_l6_dir()
    return Path(spec.base)


def _probe(task: _PreparedTask, seed: int) -> list[ProbeSentence]:
    probe = task.spec.bias_probe
    if probe.kind == "off":
        return []
    return probe_sentences(
        assets.holistic_bias_dir(), probe.descriptors_per_group, seed, task.probe_templates
    )


@dataclass(frozen=True)
class _BuiltTask:
    report: TaskReport
    onnx_dir: Path


def _build_task(options: BuildOptions, layout: BuildLayout, task: _PreparedTask) -> _BuiltTask:
    spec, seed, name = task.spec, options.seed, task.spec.name
    splits, labels = task.splits, task.labels
    serving_length = spec.serving.max_length

    def make_data(out: Path) -> None:
        save_splits(splits, out)
        _write_record(out / "data.json", task.record)

    data_key = _fingerprint("data", task.record.model_dump(), _splits_digest(splits))
    _stage(layout.stage_dir(name, "data"), data_key, make_data)
    # The fingerprint covers the whole record, so a reused stage holds this same one.
    data = task.record

    teacher_key = _fingerprint("teacher", data_key, spec.teacher.model_dump(), seed)
    teacher_dir = _stage(
        layout.stage_dir(name, "teacher"),
        teacher_key,
        lambda out: _write_record(
            out / "teacher.json",
            train_teacher(
                _teacher_base(spec.teacher, layout),
                Path(spec.teacher.base).name,
                labels,
                splits.train,
                splits.validation,
                spec.teacher,
                seed,
                out / "model",
                description=f"{name}: LoRA teacher",
            ),
        ),
    )
    teacher_onnx_key = _fingerprint("teacher_onnx", teacher_key)
    teacher_onnx_dir = _stage(
        layout.teacher_onnx_dir(name),
        teacher_onnx_key,
        lambda out: _export_teacher(
            name,
            teacher_dir / "model",
            teacher_key,
            spec.teacher.max_length,
            [e.text for e in splits.test],
            out,
        ),
    )
    probe = _probe(task, seed)

    def run_teacher(out: Path) -> None:
        model, tokenizer = load_classifier(teacher_dir / "model")
        inputs = {
            "train": [e.text for e in splits.train],
            "test": [e.text for e in splits.test],
            "probe": [s.text for s in probe],
        }
        for split, texts in inputs.items():
            if not texts:
                continue
            logits = predict_logits(
                model,
                tokenizer,
                texts,
                spec.teacher.max_length,
                description=f"{name}: teacher {split}",
            )
            np.save(out / f"{split}_logits.npy", logits)

    probe_key = [s.text for s in probe] if task.probe_templates else len(probe)
    outputs_key = _fingerprint("teacher_outputs", teacher_key, probe_key)
    outputs_dir = _stage(layout.stage_dir(name, "teacher_outputs"), outputs_key, run_teacher)

    student_key = _fingerprint("student", outputs_key, spec.student.model_dump(), serving_length)
    student_dir = _stage(
        layout.stage_dir(name, "student"),
        student_key,
        lambda out: _write_record(
            out / "student.json",
            distill_student(
                labels,
                splits.train,
                np.load(outputs_dir / "train_logits.npy"),
                splits.validation,
                spec.student,
                serving_length,
                teacher_dir / "model",
                seed,
                out / "model",
                description=f"{name}: distilled student",
            ),
        ),
    )
    onnx_key = _fingerprint("onnx", student_key)
    onnx_dir = _stage(
        layout.student_onnx_dir(name),
        onnx_key,
        lambda out: export_student(student_dir / "model", out, serving_length),
    )
    latency_samples = spec.evaluation.latency_samples
    evaluation_key = _fingerprint("evaluation", onnx_key, outputs_key, latency_samples)
    evaluation_dir = _stage(
        layout.stage_dir(name, "evaluation"),
        evaluation_key,
        lambda out: _write_record(
            out / "metrics.json",
            evaluate_task(
                labels,
                splits.test,
                serving_length,
                spec.teacher.max_length,
                teacher_dir / "model",
                np.load(outputs_dir / "test_logits.npy"),
                student_dir / "model",
                onnx_dir,
                latency_samples,
                probe,
                [int(i) for i in np.load(outputs_dir / "probe_logits.npy").argmax(1)]
                if probe
                else [],
            ),
        ),
    )
    metrics = _read_record(evaluation_dir / "metrics.json", Evaluation)
    teacher = _read_record(teacher_dir / "teacher.json", TeacherTraining)
    teacher_export = _read_record(teacher_onnx_dir / TEACHER_ONNX_RECORD, TeacherExport)
    student = _read_record(student_dir / "student.json", StudentTraining)
    report = TaskReport(
        model=name,
        version="1",  # the version it is published as is decided when it is published
        description=spec.description,
        serving=ServingRecord(**spec.serving.model_dump()),
        prompt=PromptRecord(**spec.prompts.model_dump()),
        labels=labels,
        split_sizes=data.split_sizes,
        data=data,
        max_length=serving_length,
        teacher=TeacherReport(
            **teacher.model_dump(),
            **metrics.teacher.model_dump(),
            onnx_max_logit_diff=teacher_export.max_abs_logit_diff,
        ),
        student=StudentReport(**student.model_dump(), **metrics.student.model_dump()),
        onnx=metrics.onnx,
        bias=metrics.bias,
        served_precision=_served_precision(
            options.precision or spec.serving.precision, metrics.onnx
        ),
    )
    return _BuiltTask(report, onnx_dir)


def _export_teacher(
    task: str, model_dir: Path, version: str, max_length: int, texts: list[str], out: Path
) -> None:
    """The teacher in ONNX fp32 for the batch job, with its parity with torch on the test
    texts (the same token inputs for both) and the teacher version it comes from."""
    export_teacher(model_dir, out, max_length)
    # Measured on CPU on every machine, so the recorded parity is the export's, not a GPU's.
    exported = OnnxTextClassifier(
        out / TEACHER_ONNX_FILE, out / ONNX_TOKENIZER_FILE, provider="cpu"
    )
    diff = max_torch_onnx_diff(model_dir, exported, texts)
    print(f"  {task}/teacher_onnx: max |logit diff| from torch {diff:.1e} on {len(texts)} texts")
    record = TeacherExport(
        teacher_version=version,
        max_abs_logit_diff=diff,
        parity_texts=len(texts),
        size_bytes=(out / TEACHER_ONNX_FILE).stat().st_size,
    )
    _write_record(out / TEACHER_ONNX_RECORD, record)


def _splits_digest(splits: Splits) -> str:
    digest = hashlib.sha256()
    for split in SPLITS:
        for example in getattr(splits, split):
            digest.update(json.dumps([split, example.text, example.label]).encode())
    return digest.hexdigest()[:16]


def _served_precision(requested: RequestedPrecision, onnx: OnnxReport) -> Precision:
    """int8 unless asked otherwise, or unless quantization costs accuracy."""
    if requested != "auto":
        return requested
    keeps_accuracy = (
        onnx.int8_agreement_with_fp32 >= 0.99
        and onnx.int8_test_accuracy >= onnx.fp32_test_accuracy - 0.01
    )
    return "int8" if keeps_accuracy else "fp32"


def _served_file(built: _BuiltTask) -> Path:
    precision = built.report.served_precision
    return built.onnx_dir / (STUDENT_INT8_FILE if precision == "int8" else STUDENT_FP32_FILE)


@dataclass(frozen=True)
class _Published:
    """What publishing needs to know of a built student, read from its file once."""

    sha256: str
    inputs: list[str]


def _published(built: _BuiltTask) -> _Published:
    model_file = _served_file(built)
    # Its tensor names only: CPU, wherever the build runs.
    tokenizer = built.onnx_dir / ONNX_TOKENIZER_FILE
    inputs = OnnxTextClassifier(model_file, tokenizer, provider="cpu").input_names
    return _Published(hashlib.sha256(model_file.read_bytes()).hexdigest(), inputs)


def _next_version(
    published: Path, task: str, student: _Published
) -> tuple[str, ModelVersion | None]:
    """The version the built student is published as, and the published one to keep beside it.

    A new model file gets the next number, and the version it replaces stays, so Triton serves
    both while the routers move over; older ones are dropped. The same model file keeps its
    number and the version before it (a rerun publishes nothing new).
    """
    try:
        latest = latest_version(published, task)
        card = latest.card()
    except (FileNotFoundError, ValueError):
        return "1", None
    if card.sha256 == student.sha256:
        before = version_dirs(published / task)[-2:-1]
        return latest.version, ModelVersion(task, before[0].name, before[0]) if before else None
    # A version with other tensors cannot share the model's config.
    return str(int(latest.version) + 1), latest if card.inputs == student.inputs else None


def _write_model_version(
    repository: Path, task: str, built: _BuiltTask, student: _Published, options: BuildOptions
) -> None:
    report = built.report
    files = ModelVersion.of(repository, task, report.version)
    files.path.mkdir(parents=True)
    shutil.copyfile(_served_file(built), files.model_file)
    shutil.copyfile(built.onnx_dir / ONNX_TOKENIZER_FILE, files.tokenizer_file)
    (files.path / LABELS_FILE).write_text(
        json.dumps(report.labels, indent=2) + "\n", encoding="utf-8"
    )
    config = student_config(task, student.inputs, len(report.labels), report.serving)
    (repository / task / CONFIG_FILE).write_text(render_config(config), encoding="utf-8")
    card = ModelCard(
        **report.model_dump(),
        task=task,
        inputs=student.inputs,
        profile=options.profile,
        seed=options.seed,
        sha256=student.sha256,
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    _write_record(files.path / CARD_FILE, card)


def _load_specs(options: BuildOptions) -> list[TaskFile]:
    if not options.task_files:
        raise PipelineError("no task given; use --task-file FILE or --tasks NAME,...")
    specs = [
        load_task_file(path, options.profile, options.overrides) for path in options.task_files
    ]
    seen: dict[str, Path] = {}
    for spec, path in zip(specs, options.task_files, strict=True):
        if spec.name in seen:
            raise PipelineError(f"task {spec.name!r} is named by both {seen[spec.name]} and {path}")
        if spec.name == BuildLayout(options.out_dir).base_models.name:
            raise PipelineError(f"{path}: the task name {spec.name!r} is reserved")
        seen[spec.name] = path
    return specs


def build_models(options: BuildOptions, console: Console | None = None) -> BuildReport:
    """Check every task's data, build each task, then publish the model repository and
    `report.json`. A task file or data error stops the build before anything is written."""
    console = console or Console()
    prepared = [_prepare(spec, options.seed) for spec in _load_specs(options)]
    for prepared_task in prepared:
        record = prepared_task.record
        console.print(_data_table(prepared_task))
        console.print(
            f"{prepared_task.spec.name}: {record.rows_read} rows read; dropped "
            f"{record.duplicates_dropped} duplicates and {record.conflicting_labels_dropped} "
            "texts seen with two labels",
            highlight=False,
        )
    layout = BuildLayout(options.out_dir)
    _claim_output_dir(options, layout)
    transformers_logging.set_verbosity_error()
    built = {
        prepared_task.spec.name: _build_task(options, layout, prepared_task)
        for prepared_task in prepared
    }

    repository = layout.model_repository
    staging = repository.with_name(f".{repository.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    if repository.is_dir():
        # Tasks not rebuilt this time stay published as they were (hard links, no copies).
        for kept in repository.iterdir():
            if kept.name not in built:
                shutil.copytree(kept, staging / kept.name, copy_function=os.link)
    for task, result in list(built.items()):
        student = _published(result)
        version, replaced = _next_version(repository, task, student)
        if replaced is not None:
            shutil.copytree(replaced.path, staging / task / replaced.version, copy_function=os.link)
        versioned = result.report.model_copy(update={"version": version})
        built[task] = result = _BuiltTask(versioned, result.onnx_dir)
        _write_model_version(staging, task, result, student, options)
    publish_directory(staging, repository)

    try:
        previous = layout.read_report()
    except ValueError as exc:
        print(f"  {exc}: its tasks that were not rebuilt now are left out of the new report")
        previous = None
    kept_tasks = previous.tasks if previous and previous.profile == options.profile else {}
    report = BuildReport(
        profile=options.profile,
        seed=options.seed,
        tasks=kept_tasks | {task: result.report for task, result in built.items()},
    )
    partial_report = layout.report_file.with_name(f".{layout.report_file.name}.partial")
    _write_record(partial_report, report)
    partial_report.replace(layout.report_file)
    return report
