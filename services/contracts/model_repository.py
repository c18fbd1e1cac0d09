"""The model repository: the unit of deployment, written by the pipeline and read by Triton,
the router, the Triton launcher, prompt evaluation and the tools.

    <repository>/<model>/config.pbtxt                 Triton's ModelConfig, text format
    <repository>/<model>/<version>/model.onnx         the student
    <repository>/<model>/<version>/tokenizer.json     its serving tokenizer (truncation set)
    <repository>/<model>/<version>/labels.json        the label of each logit, in order
    <repository>/<model>/<version>/model_card.json    ModelCard: inputs, output, max length,
                                                      plus the build's TaskReport

A version is a folder named by a positive integer in ASCII digits, without leading zeros;
hidden folders (".name") are being written and are never models or versions. Configs are
Triton's own `ModelConfig` protobuf (shipped in tritonclient), so a file that parses here is
one Triton can read.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from google.protobuf.message import Message
from pydantic import BaseModel, ConfigDict, ValidationError
from tritonclient.grpc import model_config_pb2 as mc

from services.contracts.build_report import ServingRecord

__all__ = [
    "CARD_FILE",
    "CONFIG_FILE",
    "LABELS_FILE",
    "MODEL_FILE",
    "SERVED_VERSIONS",
    "TOKENIZER_FILE",
    "ModelCard",
    "ModelVersion",
    "latest_version",
    "model_names",
    "parse_config",
    "render_config",
    "version_dirs",
]

CONFIG_FILE = "config.pbtxt"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
LABELS_FILE = "labels.json"
CARD_FILE = "model_card.json"
# Versions of a model Triton keeps loaded: a new one and the one it replaces.
SERVED_VERSIONS = 2


class ModelCard(BaseModel):
    """What serving needs from a version's card. The pipeline adds the task's whole build
    report (metrics, data, bias probe), kept here as extra fields."""

    model_config = ConfigDict(frozen=True, extra="allow")

    task: str
    version: str
    inputs: list[str]
    output: str = "logits"
    max_length: int | None = None
    serving: ServingRecord | None = None
    sha256: str = ""
    created_at: str = ""


@dataclass(frozen=True)
class ModelVersion:
    model: str
    version: str
    path: Path

    @classmethod
    def of(cls, repository: Path, model: str, version: str) -> "ModelVersion":
        return cls(model, version, repository / model / version)

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def tokenizer_file(self) -> Path:
        return self.path / TOKENIZER_FILE

    def labels(self) -> list[str]:
        labels: list[str] = json.loads((self.path / LABELS_FILE).read_text(encoding="utf-8"))
        return labels

    def card(self) -> ModelCard:
        """The version's card; ValueError when it lacks what serving needs."""
        path = self.path / CARD_FILE
        try:
            return ModelCard.model_validate_json(path.read_text(encoding="utf-8"))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
                for error in exc.errors(include_url=False, include_input=False)
            )
            raise ValueError(f"{path} is not a usable model card: {problems}") from None


def model_names(repository: Path) -> list[str]:
    """The models of a repository: folders with a config, in name order."""
    return sorted(
        path.name
        for path in repository.iterdir()
        if not path.name.startswith(".") and (path / CONFIG_FILE).is_file()
    )


def _is_version(name: str) -> bool:
    return name.isascii() and name.isdigit() and not name.startswith("0")


def version_dirs(model_dir: Path) -> list[Path]:
    """A model's version folders, oldest (lowest number) first."""
    if not model_dir.is_dir():
        return []
    versions = [p for p in model_dir.iterdir() if p.is_dir() and _is_version(p.name)]
    return sorted(versions, key=lambda path: int(path.name))


def latest_version(repository: Path, model: str) -> ModelVersion:
    """The newest version of `model`; FileNotFoundError when it has none."""
    versions = version_dirs(repository / model)
    if not versions:
        raise FileNotFoundError(f"no version of model {model!r} in {repository}")
    return ModelVersion(model, versions[-1].name, versions[-1])


def parse_config(text: str) -> Message:
    """Parse `config.pbtxt` text into Triton's ModelConfig; ValueError says what is wrong."""
    config = mc.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ValueError(f"invalid Triton model config: {exc}") from None
    if not config.name or not config.input or not config.output:
        raise ValueError("invalid Triton model config: name, input and output are required")
    return config


def render_config(config: Message) -> str:
    """`config` as `config.pbtxt` text, checked by parsing it back."""
    text: str = text_format.MessageToString(config)
    parse_config(text)
    return text
