"""Build profiles: how big the teacher is and how long each stage trains.

`quick` fits CI (both tasks in a few minutes on 2 cores); `full` is the real build.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.pipeline.errors import PipelineError

__all__ = [
    "PROFILES",
    "BuildProfile",
    "RequestedPrecision",
    "TaskBudget",
    "get_profile",
    "parse_precision",
]

TeacherBase = Literal["all-MiniLM-L6-v2", "all-mpnet-base-v2"]
RequestedPrecision = Literal["auto", "int8", "fp32"]
_PRECISIONS: tuple[RequestedPrecision, ...] = ("auto", "int8", "fp32")


def parse_precision(value: str) -> RequestedPrecision:
    """The served precision asked for: auto (int8 if it keeps accuracy), int8 or fp32."""
    for precision in _PRECISIONS:
        if value == precision:
            return precision
    raise PipelineError(f"unknown precision {value!r}; use auto, int8 or fp32")


class TaskBudget(BaseModel):
    """Per-task sizes: examples used from each split, sequence length and training steps."""

    model_config = ConfigDict(frozen=True)

    max_train: int = Field(gt=0)
    max_eval: int = Field(gt=0, description="cap on validation and test examples each")
    max_length: int = Field(gt=8, le=512)
    teacher_steps: int = Field(gt=0)
    student_steps: int = Field(gt=0)


class BuildProfile(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    teacher_base: TeacherBase
    batch_size: int = 16
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    teacher_learning_rate: float = 1e-3
    student_learning_rate: float = 1e-4
    distill_temperature: float = 2.0
    hard_label_weight: float = Field(0.2, ge=0.0, le=1.0)
    evaluations_during_training: int = Field(1, ge=1)
    latency_samples: int = 100
    bias_descriptors_per_group: int = 12
    max_batch_size: int = 32
    tasks: dict[str, TaskBudget]

    def with_overrides(
        self,
        max_train: int | None = None,
        max_eval: int | None = None,
        teacher_steps: int | None = None,
        student_steps: int | None = None,
    ) -> "BuildProfile":
        """The same profile with smaller (or larger) budgets, e.g. for tests."""
        overrides = {
            key: value
            for key, value in {
                "max_train": max_train,
                "max_eval": max_eval,
                "teacher_steps": teacher_steps,
                "student_steps": student_steps,
            }.items()
            if value is not None
        }
        tasks = {name: budget.model_copy(update=overrides) for name, budget in self.tasks.items()}
        return self.model_copy(update={"tasks": tasks})


PROFILES: dict[str, BuildProfile] = {
    "quick": BuildProfile(
        name="quick",
        teacher_base="all-MiniLM-L6-v2",
        teacher_learning_rate=2e-3,
        student_learning_rate=2e-4,
        latency_samples=50,
        tasks={
            "topic": TaskBudget(
                max_train=1000, max_eval=300, max_length=64, teacher_steps=60, student_steps=80
            ),
            "sentiment": TaskBudget(
                max_train=2500, max_eval=500, max_length=48, teacher_steps=80, student_steps=120
            ),
        },
    ),
    "full": BuildProfile(
        name="full",
        teacher_base="all-mpnet-base-v2",
        teacher_learning_rate=5e-4,
        evaluations_during_training=3,
        tasks={
            "topic": TaskBudget(
                max_train=1500, max_eval=320, max_length=96, teacher_steps=150, student_steps=400
            ),
            "sentiment": TaskBudget(
                max_train=6000, max_eval=1500, max_length=48, teacher_steps=200, student_steps=600
            ),
        },
    ),
}


def get_profile(name: str) -> BuildProfile:
    if name not in PROFILES:
        raise PipelineError(f"unknown profile {name!r}; known profiles: {', '.join(PROFILES)}")
    return PROFILES[name]
