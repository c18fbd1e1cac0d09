"""The build's fine-tuned teacher as the batch job's label source, found without loading torch."""

from dataclasses import dataclass
from pathlib import Path

from services.batch.errors import BatchError
from services.batch.labels import Labeller
from services.contracts.build_layout import BuildLayout, TeacherRecord

__all__ = ["TeacherInfo"]


@dataclass(frozen=True)
class TeacherInfo:
    """What a build records about a task's teacher; cheap to read, loads no weights."""

    record: TeacherRecord

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
        return {"teacher": "model"}

    def labeller(self, batch_size: int) -> Labeller:
        # Torch loads only when there is something to label.
        from services.batch.labeller import TeacherLabeller

        return TeacherLabeller(self.record.model_dir, self.max_length, self.labels, batch_size)

    @classmethod
    def read(cls, build_dir: Path, task: str) -> "TeacherInfo":
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
        try:
            return cls(layout.read_teacher(task))
        except ValueError as exc:
            raise BatchError(
                f"{exc}: the teacher predates this batch job; rebuild it with "
                f"`switchyard models build --out {build_dir}`"
            ) from None
