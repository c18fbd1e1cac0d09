"""A text classifier served from ONNX with onnxruntime and `tokenizers`; no torch.

It reads a model version of the model repository (or the export stages' files, the student's
or the teacher's): the graph and the serving `tokenizer.json`, whose truncation was fixed at
export time. Texts become tensors exactly as on the router's path
(`services.contracts.model_io`). The session, on CUDA or CPU, comes from
`services.contracts.onnx_session`.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from services.contracts.model_io import OUTPUT_NAME, Inputs, TextEncoder
from services.contracts.model_repository import ModelVersion
from services.contracts.onnx_session import ProviderPreference, create_session, session_provider

__all__ = ["OnnxTextClassifier"]


class OnnxTextClassifier:
    def __init__(
        self,
        model_path: Path,
        tokenizer_path: Path,
        threads: int | None = None,
        provider: ProviderPreference = "auto",
    ) -> None:
        self._session = create_session(model_path, provider, threads)
        self.provider = session_provider(self._session)
        """The execution provider it runs on (CUDA's or CPU's)."""
        self.input_names = [node.name for node in self._session.get_inputs()]
        self._encoder = TextEncoder.from_file(tokenizer_path, self.input_names)

    @classmethod
    def of_version(
        cls, files: ModelVersion, threads: int | None = None, provider: ProviderPreference = "auto"
    ) -> "OnnxTextClassifier":
        return cls(files.model_file, files.tokenizer_file, threads, provider)

    def encode(self, texts: Sequence[str]) -> Inputs:
        """The model's int64 inputs for `texts`, padded to the longest (within max length)."""
        return self._encoder.encode(texts)

    def run(self, inputs: Inputs) -> npt.NDArray[np.float32]:
        logits: npt.NDArray[np.float32] = self._session.run([OUTPUT_NAME], inputs)[0]
        return logits

    def logits(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return self.run(self.encode(texts))
