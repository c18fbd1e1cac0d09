"""What a model build measured: the typed form of `report.json` and of each stage's record.

The pipeline writes these, `switchyard models report` prints them, the model card carries a
task's report, and the batch job reads the teacher's training record. Every field is named
here once; nothing indexes a report by string.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BiasReport",
    "BuildReport",
    "DataRecord",
    "DataSummary",
    "Evaluation",
    "LoraSummary",
    "OnnxReport",
    "Precision",
    "PromptRecord",
    "RequestedPrecision",
    "ServingRecord",
    "StudentMetrics",
    "StudentReport",
    "StudentTraining",
    "TaskReport",
    "TeacherExport",
    "TeacherMetrics",
    "TeacherReport",
    "TeacherTraining",
]

Precision = Literal["int8", "fp32"]
RequestedPrecision = Literal["auto", "int8", "fp32"]


class _Record(BaseModel):
    # Records outlive the code that wrote them: a newer field in an older build is ignored.
    model_config = ConfigDict(frozen=True, extra="ignore")


class DataSummary(_Record):
    rows_read: int
    unique_examples: int
    duplicates_dropped: int
    conflicting_labels_dropped: int
    full_split_sizes: dict[str, int]


class DataRecord(DataSummary):
    """What the data stage records in `data.json`."""

    labels: list[str]
    split_sizes: dict[str, int]
    label_counts: dict[str, dict[str, int]] = {}


class LoraSummary(_Record):
    r: int
    alpha: int
    target_modules: str | list[str]


class TeacherTraining(_Record):
    """What the teacher stage records in `teacher.json`."""

    base_model: str
    params: int
    trainable_params: int
    trainable_fraction: float
    lora: LoraSummary
    max_length: int
    steps: int
    best_step: int
    validation_accuracy: float


class TeacherExport(_Record):
    """What the teacher_onnx stage records in `teacher_onnx.json`: which teacher it exported,
    and its parity with torch on the test texts (the same token inputs for both)."""

    teacher_version: str
    max_abs_logit_diff: float
    parity_texts: int
    size_bytes: int


class StudentTraining(_Record):
    """What the student stage records in `student.json`."""

    base_model: str
    params: int
    temperature: float
    hard_label_weight: float
    steps: int
    best_step: int
    validation_accuracy: float


class TeacherMetrics(_Record):
    test_accuracy: float
    test_macro_f1: float
    latency_ms_batch1: float


class StudentMetrics(TeacherMetrics):
    agreement_with_teacher: float


class OnnxReport(_Record):
    max_abs_logit_diff: float
    fp32_test_accuracy: float
    int8_agreement_with_fp32: float
    int8_test_accuracy: float
    int8_test_macro_f1: float
    fp32_latency_ms_batch1: float
    int8_latency_ms_batch1: float
    size_bytes_fp32: int
    size_bytes_int8: int


class BiasReport(_Record):
    """Label shares per demographic group of the probe, for the student and the teacher."""

    groups: int
    sentences: int
    max_gap: float
    max_gap_label: str
    teacher_max_gap: float
    teacher_max_gap_label: str
    distribution: dict[str, dict[str, float]]
    teacher_distribution: dict[str, dict[str, float]]


class Evaluation(_Record):
    """What the evaluation stage records in `metrics.json`."""

    teacher: TeacherMetrics
    student: StudentMetrics
    onnx: OnnxReport
    bias: BiasReport | None


class TeacherReport(TeacherTraining, TeacherMetrics):
    onnx_max_logit_diff: float | None = None
    """The ONNX teacher's largest logit difference from torch; None: built without it."""


class StudentReport(StudentTraining, StudentMetrics):
    pass


class ServingRecord(_Record):
    """How a task is served: its student's inputs and Triton batching, and the router's rules."""

    max_length: int = Field(64, gt=8, le=512, description="tokens the student reads")
    confidence_threshold: float = Field(
        0.6, ge=0.0, le=1.0, description="model answers below it are queued for the next run"
    )
    max_text_length: int = Field(4000, gt=0, description="characters the router accepts")
    max_batch_size: int = Field(32, gt=0, description="Triton's largest batch")
    preferred_batch_sizes: list[int] | None = Field(
        None,
        min_length=1,
        description="for Triton's dynamic batcher; default 4, 8, 16, ... up to the largest",
    )
    dynamic_batching: bool = Field(
        False,
        description="Triton's dynamic batcher, for GPU instances; on CPU a row costs its tokens "
        "batched or not, and a batch runs on one instance while another may idle",
    )
    max_queue_delay_us: int = Field(500, ge=0, description="Triton's dynamic batching delay")
    instances: int = Field(2, gt=0, description="Triton model instances")
    threads: int = Field(1, gt=0, description="onnxruntime threads per instance")
    precision: RequestedPrecision = "auto"

    def batch_sizes(self) -> list[int]:
        if self.preferred_batch_sizes is not None:
            return sorted(self.preferred_batch_sizes)
        sizes, size = [], 4
        while size <= self.max_batch_size:
            sizes.append(size)
            size *= 2
        return sizes


class PromptRecord(_Record):
    """How an LLM is asked this task's question (zero-, one- or few-shot)."""

    instruction: str = Field(
        "Classify each text as one of: {labels}.", description="{labels} lists the labels"
    )
    answer_field: str = Field("label", description="the word before each example's answer")
    few_shot_pool: bool = Field(True, description="examples come from the training split")


class TaskReport(_Record):
    model: str = ""
    version: str = ""
    description: str = ""
    serving: ServingRecord = ServingRecord()
    prompt: PromptRecord = PromptRecord()
    labels: list[str]
    split_sizes: dict[str, int]
    data: DataSummary
    max_length: int
    teacher: TeacherReport
    student: StudentReport
    onnx: OnnxReport
    bias: BiasReport | None
    served_precision: Precision


class BuildReport(_Record):
    profile: str
    seed: int
    tasks: dict[str, TaskReport]
