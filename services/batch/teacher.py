"""The build's fine-tuned teacher as the batch job's label source, found without loading weights.

It runs as the build's ONNX export with onnxruntime by default (`runtime="onnx"`: faster on
CPU, CUDA when it works), or as the merged model with torch (`runtime="torch"`). Both give
the same labels; the runtime is recorded in the generation's metadata, not in its version, so
a run resumed with the other runtime stays the same run.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from services.batch.errors import BatchError
from services.batch.labels import Labeller
from services.contracts.build_layout import BuildLayout, TeacherRecord

__all__ = ["ONNX_PARITY_LIMIT", "TeacherInfo", "TeacherRuntime"]

TeacherRuntime = Literal["onnx", "torch"]
# An export whose logits were this far from torch's on the test texts is broken, not noisy
# (fp32 exports stay near 1e-6): its labels would not be the teacher's.
ONNX_PARITY_LIMIT = 1e-3


@dataclass(frozen=True)
class TeacherInfo:
    """What a build records about a task's teacher; cheap to read, loads no weights."""

    record: TeacherRecord
    runtime: TeacherRuntime = "onnx"

    @property
    def task(self) -> str:
        return self.record.task

    @property
    def model_name(self) -> str:
        return f"{self.task}-teacher"

    @property
    def base_model(self) -> str:
        return self.record.training.base_model

    @property
    def version(self) -> str:
        return self.record.version

    @property
    def labels(self) -> list[str]:
        return self.record.labels

    @property
    def max_length(self) -> int:
        return self.record.training.max_length

    def describe(self) -> dict[str, str]:
        return {"teacher": "model", "runtime": self.runtime}

    def labeller(self, batch_size: int, threads: int | None = None) -> Labeller:
        # onnxruntime or torch loads only when there is something to label.
        if self.runtime == "onnx":
            from services.batch.onnx_labeller import OnnxTeacherLabeller

            files = self.record.onnx
            if files is None:  # only a TeacherInfo made without `read` gets here
                raise BatchError(f"no ONNX teacher for {self.task!r}; use the torch runtime")
            return OnnxTeacherLabeller(files, self.labels, batch_size, threads)
        from services.batch.labeller import TeacherLabeller

        return TeacherLabeller(
            self.record.model_dir, self.max_length, self.labels, batch_size, threads
        )

    @classmethod
    def read(cls, build_dir: Path, task: str, runtime: TeacherRuntime = "onnx") -> "TeacherInfo":
        layout = BuildLayout(build_dir)
        tasks = layout.built_teachers()
        if not tasks:
            raise BatchError(
                f"no teacher model in {build_dir}; run `switchyard models build "
                f"--out {build_dir}` first, or pass --build"
            )
        if task not in tasks:
            known = ", ".join(tasks)
            raise BatchError(f"unknown task {task!r}; tasks built in {build_dir}: {known}")
        if runtime not in ("onnx", "torch"):
            raise BatchError(f"unknown teacher runtime {runtime!r}; use onnx or torch")
        try:
            record = layout.read_teacher(task)
        except ValueError as exc:
            raise BatchError(
                f"{exc}: the teacher predates this batch job; rebuild it with "
                f"`switchyard models build --out {build_dir}`"
            ) from None
        if runtime == "onnx":
            _check_onnx(record, build_dir)
        return cls(record, runtime)


def _check_onnx(record: TeacherRecord, build_dir: Path) -> None:
    """BatchError unless the build's ONNX teacher is there and can stand in for torch's."""
    if record.onnx is None:
        raise BatchError(
            f"the build in {build_dir} has no ONNX teacher for {record.task!r} (built before "
            f"it, or interrupted); run `switchyard models build --out {build_dir}` with the "
            "same options (it reuses the finished stages and only exports the teacher), or "
            "pass --teacher-runtime torch"
        )
    if record.onnx.max_abs_logit_diff > ONNX_PARITY_LIMIT:
        raise BatchError(
            f"the ONNX teacher of {record.task!r} in {build_dir} differs from torch by up to "
            f"{record.onnx.max_abs_logit_diff:.1e} in its logits (over {ONNX_PARITY_LIMIT:g}); "
            "pass --teacher-runtime torch"
        )
