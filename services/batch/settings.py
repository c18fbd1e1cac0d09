"""What a batch run is told: deployment settings from the environment, the run's options from
the command line, and the label source they name."""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.batch.errors import BatchError
from services.batch.inputs import InputFormat
from services.batch.labels import LabelSource
from services.batch.teacher import TeacherInfo, TeacherRuntime
from services.contracts.redis_connection import RedisSettings

__all__ = [
    "BatchOptions",
    "BatchSettings",
    "Engine",
    "Shard",
    "label_source",
    "parse_engine",
    "parse_teacher_runtime",
]

_EIGHT_DAYS = 8 * 24 * 3600
Engine = Literal["in-process", "ray"]


_ENGINES: dict[str, Engine] = {"in-process": "in-process", "ray": "ray"}
_RUNTIMES: dict[str, TeacherRuntime] = {"onnx": "onnx", "torch": "torch"}


def parse_engine(value: str) -> Engine:
    if value not in _ENGINES:
        raise BatchError(f"unknown engine {value!r}; use in-process or ray")
    return _ENGINES[value]


def parse_teacher_runtime(value: str) -> TeacherRuntime:
    if value not in _RUNTIMES:
        raise BatchError(f"unknown teacher runtime {value!r}; use onnx or torch")
    return _RUNTIMES[value]


class BatchSettings(RedisSettings, BaseSettings):
    """Deployment settings; the environment (SWITCHYARD_BATCH_REDIS_URL, ...) sets them. The
    Redis connection (URL, credentials, TLS) comes from RedisSettings."""

    model_config = SettingsConfigDict(env_prefix="SWITCHYARD_BATCH_", frozen=True)

    redis_timeout_seconds: float = Field(10.0, gt=0)
    redis_cluster: bool = Field(False, description="redis_url is a node of a Redis Cluster")
    build_dir: Path = Path("build")
    # A weekly schedule plus a day of slack: a generation outlives the run that replaces it.
    ttl_seconds: int = Field(_EIGHT_DAYS, gt=0)
    batch_size: int = Field(32, gt=0, description="texts per teacher forward pass")
    write_every: int = Field(512, gt=0, description="texts labelled between two writes")
    max_chars: int = Field(20_000, gt=0, description="longer texts are skipped")
    ray_block_bytes: int = Field(
        64 * 1024 * 1024, gt=0, description="bytes of a JSONL or text file per Ray read task"
    )


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, value: str) -> "Shard":
        index, slash, count = value.partition("/")
        try:
            shard = cls(int(index), int(count))
        except ValueError:
            shard = cls(-1, 0)
        if not slash or not 0 <= shard.index < shard.count:
            raise BatchError(f"--shard must be i/n with 0 <= i < n, got {value!r}")
        return shard

    def owns(self, digest: str) -> bool:
        return int(digest[:8], 16) % self.count == self.index


@dataclass(frozen=True)
class BatchOptions:
    task: str
    inputs: list[str]  # files, folders, globs or fsspec URLs
    include_misses: bool = False
    top_misses: int = 0  # also label the N most frequent uncached texts of the last week
    score_samples: bool = False  # then score the routers' sampled answers with the teacher
    shard: Shard = Shard(0, 1)
    namespace: str = ""
    input_format: InputFormat | None = None
    text_field: str = "text"
    show_progress: bool = True
    teacher: str = "model"  # or "llm-fewshot": the prompted LLM
    teacher_runtime: TeacherRuntime = "onnx"
    shots: int = 3
    selection: str = "nearest"
    seed: int = 0
    engine: Engine = "in-process"
    ray_address: str | None = None  # None: RAY_ADDRESS, else a local Ray
    ray_workers: int | None = None  # most teacher actors; None: one per GPU, else per CPU


def label_source(options: BatchOptions, settings: BatchSettings) -> LabelSource:
    """The build's fine-tuned teacher, or the prompted LLM; found without loading weights."""
    if options.teacher == "model":
        return TeacherInfo.read(settings.build_dir, options.task, options.teacher_runtime)
    if options.teacher != "llm-fewshot":
        raise BatchError(f"unknown teacher {options.teacher!r}; use model or llm-fewshot")
    from services.batch.fewshot_teacher import FewShotTeacher
    from services.prompts.errors import PromptError
    from services.prompts.evaluate import PromptSettings
    from services.prompts.selection import parse_selection

    try:
        return FewShotTeacher.read(
            options.task,
            options.shots,
            parse_selection(options.selection),
            options.seed,
            settings.build_dir,
            PromptSettings(),
        )
    except (PromptError, ValueError) as exc:
        raise BatchError(str(exc)) from None
