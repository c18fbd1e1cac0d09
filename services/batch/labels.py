"""What labels a generation, as the batch job sees it: a source (the build's fine-tuned
teacher, or a prompted LLM) known before any weights load, and the labeller it makes."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["LabelSource", "Labelled", "Labeller"]


@dataclass(frozen=True)
class Labelled:
    label: str
    scores: dict[str, float]


class Labeller(Protocol):
    def label(self, texts: Sequence[str]) -> list[Labelled]: ...


class LabelSource(Protocol):
    """Its `version` is part of the run id, so it must be known without loading weights."""

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
