"""The teacher as the batch job's labeller: the merged LoRA model of a build, run with torch.

The default runtime is its ONNX export (`services.batch.onnx_labeller`); this one is the
fallback (`--teacher-runtime torch`) and the reference the ONNX teacher is measured against.
"""

from collections.abc import Sequence
from pathlib import Path

import torch

from services.batch.labels import Labelled, labelled_from_logits
from services.pipeline.teacher import load_classifier
from services.pipeline.training import predict_logits

__all__ = ["TeacherLabeller"]


class TeacherLabeller:
    """The merged teacher of a build (`switchyard models build`), on CUDA when available."""

    def __init__(
        self,
        model_dir: Path,
        max_length: int,
        labels: list[str],
        batch_size: int,
        threads: int | None = None,
    ) -> None:
        if threads is not None:
            # Process-wide in torch: one labeller per process, as the batch job's actors are.
            torch.set_num_threads(threads)
        self._max_length = max_length
        self._batch_size = batch_size
        self._model, self._tokenizer = load_classifier(model_dir)
        if torch.cuda.is_available():
            torch.nn.Module.to(self._model, "cuda")
        self._labels = labels

    def label(self, texts: Sequence[str]) -> list[Labelled]:
        logits = predict_logits(
            self._model, self._tokenizer, texts, self._max_length, self._batch_size
        )
        return labelled_from_logits(logits, self._labels)
