"""A build's record of each task's teacher, read without loading torch or any weights."""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from services.batch.errors import BatchError

if TYPE_CHECKING:
    from services.batch.labeller import Labelled

__all__ = ["LabelSource", "Labeller", "TeacherInfo", "built_tasks"]


class Labeller(Protocol):
    def label(self, texts: Sequence[str]) -> list["Labelled"]: ...


class LabelSource(Protocol):
    """What labels a generation: the build's fine-tuned teacher, or a prompted LLM."""

    @property
    def task(self) -> str: ...
    @property
    def model_name(self) -> str: ...
    @property
    def base_model(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def labels(self) -> list[str]: ...
    def describe(self) -> dict[str, str]: ...
    def labeller(self, batch_size: int) -> Labeller: ...


def built_tasks(build_dir: Path) -> list[str]:
    """Tasks whose teacher stage finished in `build_dir`."""
    return sorted(p.parent.parent.name for p in (build_dir / "work").glob("*/teacher/_stage.json"))


@dataclass(frozen=True)
class TeacherInfo:
    """What a build records about a task's teacher; cheap to read, loads no weights."""

    task: str
    model_dir: Path
    base_model: str
    version: str
    max_length: int
    labels: list[str]

    @property
    def model_name(self) -> str:
        return f"{self.task}-teacher"

    def describe(self) -> dict[str, str]:
        return {"teacher": "model"}

    def labeller(self, batch_size: int) -> Labeller:
        # Torch loads only when there is something to label.
        from services.batch.labeller import TeacherLabeller

        return TeacherLabeller(self, batch_size)

    @classmethod
    def read(cls, build_dir: Path, task: str) -> "TeacherInfo":
        tasks = built_tasks(build_dir)
        if not tasks:
            raise BatchError(
                f"no teacher model in {build_dir}; run `switchyard models build "
                f"--out {build_dir}` first, or pass --build"
            )
        if task not in tasks:
            known = ", ".join(tasks)
            raise BatchError(f"unknown task {task!r}; tasks built in {build_dir}: {known}")
        teacher_dir = build_dir / "work" / task / "teacher"
        info = json.loads((teacher_dir / "teacher.json").read_text(encoding="utf-8"))
        stage = json.loads((teacher_dir / "_stage.json").read_text(encoding="utf-8"))
        config = json.loads((teacher_dir / "model" / "config.json").read_text(encoding="utf-8"))
        id2label = config["id2label"]
        if "max_length" not in info:
            raise BatchError(
                f"the teacher in {teacher_dir} predates the batch job; rebuild it with "
                f"`switchyard models build --out {build_dir}`"
            )
        return cls(
            task=task,
            model_dir=teacher_dir / "model",
            base_model=info["base_model"],
            # The stage fingerprint changes whenever the teacher's data or training changes.
            version=stage["fingerprint"],
            max_length=info["max_length"],
            labels=[id2label[str(index)] for index in range(len(id2label))],
        )
