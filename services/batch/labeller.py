"""The teacher as the batch job's labeller: the merged LoRA model of a build, run with torch."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from services.batch.teacher import TeacherInfo
from services.pipeline.teacher import load_classifier
from services.pipeline.training import predict_logits

__all__ = ["Labelled", "TeacherLabeller"]


@dataclass(frozen=True)
class Labelled:
    label: str
    scores: dict[str, float]


class TeacherLabeller:
    """The merged teacher of a build (`switchyard models build`), on CUDA when available."""

    def __init__(self, info: TeacherInfo, batch_size: int) -> None:
        self._max_length = info.max_length
        self._batch_size = batch_size
        self._model, self._tokenizer = load_classifier(info.model_dir)
        if torch.cuda.is_available():
            torch.nn.Module.to(self._model, "cuda")
        self._labels = info.labels

    def label(self, texts: Sequence[str]) -> list[Labelled]:
        logits = predict_logits(
            self._model, self._tokenizer, texts, self._max_length, self._batch_size
        )
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        return [
            Labelled(
                label=self._labels[int(row.argmax())],
                scores={
                    name: round(float(p), 6) for name, p in zip(self._labels, row, strict=True)
                },
            )
            for row in probabilities
        ]
