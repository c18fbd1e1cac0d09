"""A text classifier served from ONNX with onnxruntime and `tokenizers`; no torch.

It reads a model version of the model repository (or the export stage's files): the graph and
the serving `tokenizer.json`, whose truncation was fixed at export time. Texts become tensors
exactly as on the router's path (`services.contracts.model_io`).
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from services.contracts.model_io import OUTPUT_NAME, Inputs, TextEncoder
from services.contracts.model_repository import ModelVersion

__all__ = ["OnnxTextClassifier"]


class OnnxTextClassifier:
    def __init__(self, model_path: Path, tokenizer_path: Path, threads: int | None = None) -> None:
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(model_path), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [node.name for node in self._session.get_inputs()]
        self._encoder = TextEncoder.from_file(tokenizer_path, self.input_names)

    @classmethod
    def of_version(cls, files: ModelVersion, threads: int | None = None) -> "OnnxTextClassifier":
        return cls(files.model_file, files.tokenizer_file, threads)

    def encode(self, texts: Sequence[str]) -> Inputs:
        """The model's int64 inputs for `texts`, padded to the longest (within max length)."""
        return self._encoder.encode(texts)

    def run(self, inputs: Inputs) -> npt.NDArray[np.float32]:
        logits: npt.NDArray[np.float32] = self._session.run([OUTPUT_NAME], inputs)[0]
        return logits

    def logits(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return self.run(self.encode(texts))
