"""Triton python-backend model that runs `model.onnx` with onnxruntime.

The `tritonserver` bundled in the PyPI wheel has no onnxruntime backend, so every ONNX model
of the repository is served by this one generic runner. It keeps the model's tensor names,
shapes, `max_batch_size` and dynamic batching, so clients cannot tell it from the onnxruntime
backend of NVIDIA's images. Triton loads this file as `model.py` of each version folder; the
stub runs it with the environment's site-packages, where this package is installed.

As with that backend, the config's instance kind says where it runs: a KIND_GPU instance on
its GPU with CUDA (where CUDA cannot run, the model fails to load and says why), a KIND_CPU
one on CPU; sessions come from `services.contracts.onnx_session`.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import triton_python_backend_utils as pb_utils

from services.contracts.model_io import MASK_NAME, length_groups, token_lengths
from services.contracts.onnx_session import create_session

Arrays = list[npt.NDArray[Any]]


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        parameters = {
            key: value["string_value"] for key, value in config.get("parameters", {}).items()
        }
        # 0 lets onnxruntime pick.
        threads = int(parameters.get("intra_op_thread_count", "0")) or None
        model_path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        on_gpu = args.get("model_instance_kind") == "GPU"
        self._session = create_session(
            model_path,
            "cuda" if on_gpu else "cpu",
            threads,
            # Two versions are loaded during a rollout: the idle one's spinning threads would
            # take the cores from the busy one.
            spinning=False,
            device_id=int(args.get("model_instance_device_id") or 0),
        )
        self._input_names = [tensor["name"] for tensor in config["input"]]
        self._output_names = [tensor["name"] for tensor in config["output"]]
        # Rows are trimmed to their tokens on CPU only: a GPU runs a padded batch at about
        # the cost of its longest row, and wants the batch whole.
        trim = not on_gpu and MASK_NAME in self._input_names
        self._mask_position = self._input_names.index(MASK_NAME) if trim else None

    def execute(self, requests: list[Any]) -> list[Any]:
        """Every row of every request, trimmed of its padding and run with the rows of the same
        length (on CPU a row costs its tokens, so padding is pure waste; equal lengths still
        share a run), then one response per request, its rows in their order."""
        inputs = [
            [
                pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                for name in self._input_names
            ]
            for request in requests
        ]
        outputs, failed = self._run_rows(inputs)
        responses = []
        for index, arrays in enumerate(inputs):
            answered = outputs[index]
            if index in failed or answered is None:
                # Isolate the bad request: it runs alone, so it fails alone.
                responses.append(self._respond_alone(arrays))
            else:
                responses.append(self._response(answered))
        return responses

    def _run_rows(self, inputs: list[Arrays]) -> tuple[list[Arrays | None], set[int]]:
        """Each request's outputs, and the requests that could not be run with others (their
        tensors disagree in shape, or a run holding one of their rows failed)."""
        rows: list[tuple[int, int]] = []
        lengths: list[int] = []
        failed: set[int] = set()
        for index, arrays in enumerate(inputs):
            if arrays[0].ndim != 2 or any(array.shape != arrays[0].shape for array in arrays):
                failed.add(index)
                continue
            rows += [(index, row) for row in range(arrays[0].shape[0])]
            lengths += self._lengths(arrays)
        outputs: list[Arrays | None] = [None] * len(inputs)
        for length, members in length_groups(lengths).items():
            chosen = [rows[member] for member in members]
            try:
                feed = {
                    name: np.stack([inputs[i][position][row, :length] for i, row in chosen])
                    for position, name in enumerate(self._input_names)
                }
                results: Arrays = self._session.run(self._output_names, feed)
            except Exception:  # onnxruntime raises many types; the requests are rerun alone
                failed.update(index for index, _ in chosen)
                continue
            for offset, (index, row) in enumerate(chosen):
                answered = outputs[index]
                if answered is None:
                    count = inputs[index][0].shape[0]
                    answered = [np.empty((count, *r.shape[1:]), r.dtype) for r in results]
                    outputs[index] = answered
                for output, result in zip(answered, results, strict=True):
                    output[row] = result[offset]
        return outputs, failed

    def _lengths(self, arrays: Arrays) -> list[int]:
        """Each row's tokens before its right padding (the full width without a mask)."""
        if self._mask_position is None:
            return [arrays[0].shape[1]] * len(arrays[0])
        return token_lengths(arrays[self._mask_position])

    def _response(self, outputs: Arrays) -> Any:
        tensors = [
            pb_utils.Tensor(name, output)
            for name, output in zip(self._output_names, outputs, strict=True)
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _respond_alone(self, arrays: Arrays) -> Any:
        shapes = [array.shape for array in arrays]
        if len(set(shapes)) != 1 or len(shapes[0]) != 2:
            pairs = zip(self._input_names, shapes, strict=True)
            names = ", ".join(f"{name} {list(shape)}" for name, shape in pairs)
            message = f"the inputs of a request must be (rows, tokens) of one shape, got {names}"
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
        try:
            feed = dict(zip(self._input_names, arrays, strict=True))
            return self._response(self._session.run(self._output_names, feed))
        except Exception as exc:  # onnxruntime raises many types; all become request errors
            message = f"onnxruntime could not run this request: {exc}"
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
