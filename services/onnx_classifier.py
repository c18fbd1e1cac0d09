"""A text classifier served from ONNX with onnxruntime and `tokenizers`; no torch.

It reads a model version folder of the model repository (`model.onnx` and `tokenizer.json`,
whose truncation and padding settings were fixed at export time).
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Tokenizer

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
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))

    def encode(self, texts: Sequence[str]) -> dict[str, npt.NDArray[np.int64]]:
        """The model's int64 inputs for `texts`, padded to the longest (within max length)."""
        encodings = self._tokenizer.encode_batch(list(texts))
        arrays = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        # Feed token_type_ids only to graphs that declare it (MPNet has none).
        return {name: arrays[name] for name in self.input_names}

    def run(self, inputs: dict[str, npt.NDArray[np.int64]]) -> npt.NDArray[np.float32]:
        logits: npt.NDArray[np.float32] = self._session.run(["logits"], inputs)[0]
        return logits

    def logits(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return self.run(self.encode(texts))
