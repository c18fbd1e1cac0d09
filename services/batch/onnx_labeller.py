"""The teacher as the batch job's labeller in ONNX: the build's fp32 export of the merged LoRA
teacher, run with onnxruntime (CUDA when it works, else CPU); no torch.

Texts are tokenised by the export's serving tokenizer (truncation at the teacher's max length)
and batched by length, as the torch labeller does, so both give the same labels and scores
within the parity the build recorded.
"""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from services.batch.labels import Labelled, labelled_from_logits
from services.contracts.build_layout import OnnxTeacher
from services.pipeline.onnx_classifier import OnnxTextClassifier

__all__ = ["OnnxTeacherLabeller"]


class OnnxTeacherLabeller:
    def __init__(
        self, files: OnnxTeacher, labels: list[str], batch_size: int, threads: int | None = None
    ) -> None:
        self._classifier = OnnxTextClassifier(files.model_file, files.tokenizer_file, threads)
        self._labels = labels
        self._batch_size = batch_size

    @property
    def provider(self) -> str:
        """The onnxruntime execution provider it runs on."""
        return self._classifier.provider

    def label(self, texts: Sequence[str]) -> list[Labelled]:
        return labelled_from_logits(self._logits(texts), self._labels) if texts else []

    def _logits(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        # Similar lengths in one batch keep padding, and so teacher time, low.
        order = np.argsort([len(text) for text in texts], kind="stable")
        chunks = [
            self._classifier.logits([texts[i] for i in order[start : start + self._batch_size]])
            for start in range(0, len(texts), self._batch_size)
        ]
        by_length = np.concatenate(chunks)
        logits: npt.NDArray[np.float32] = np.empty_like(by_length)
        logits[order] = by_length
        return logits
