"""What labels a generation, as the batch job sees it: a source (the build's fine-tuned
teacher, or a prompted LLM) known before any weights load, and the labeller it makes."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy.typing as npt

from services.contracts.model_io import softmax

__all__ = ["LabelSource", "Labelled", "Labeller", "labelled_from_logits"]


@dataclass(frozen=True)
class Labelled:
    label: str
    scores: dict[str, float]


class Labeller(Protocol):
    def label(self, texts: Sequence[str]) -> list[Labelled]: ...


def labelled_from_logits(logits: npt.ArrayLike, labels: list[str]) -> list[Labelled]:
    """Each row's label and scores (rounded to 6 places, as cached), for a classifier's
    (rows, labels) logits in the order of `labels`."""
    return [
        Labelled(
            label=labels[int(row.argmax())],
            scores={name: round(float(p), 6) for name, p in zip(labels, row, strict=True)},
        )
        for row in softmax(logits)
    ]


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
    def labeller(self, batch_size: int, threads: int | None = None) -> Labeller:
        """A labeller of `batch_size` texts a pass; `threads` caps its CPU threads (one per
        core when None), for several labellers on one machine."""
        ...
