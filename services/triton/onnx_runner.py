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

    def execute(self, requests: list[Any]) -> list[Any]:
        """One onnxruntime run per group of same-shaped requests, one response per request."""
        inputs = [
            [
                pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                for name in self._input_names
            ]
            for request in requests
        ]
        groups: dict[tuple[tuple[int, ...], ...], list[int]] = {}
        for index, arrays in enumerate(inputs):
            groups.setdefault(tuple(array.shape for array in arrays), []).append(index)
        responses: list[Any] = [None] * len(requests)
        for members in groups.values():
            try:
                outputs = self._run([inputs[i] for i in members])
            except Exception:  # isolate the bad request: rerun the members one by one
                for index in members:
                    responses[index] = self._respond_alone(inputs[index])
                continue
            offset = 0
            for index in members:
                rows = inputs[index][0].shape[0]
                responses[index] = self._response(
                    [output[offset : offset + rows] for output in outputs]
                )
                offset += rows
        return responses

    def _run(self, batch: list[Arrays]) -> Arrays:
        feed = {
            name: np.concatenate([arrays[position] for arrays in batch])
            for position, name in enumerate(self._input_names)
        }
        outputs: Arrays = self._session.run(self._output_names, feed)
        return outputs

    def _response(self, outputs: Arrays) -> Any:
        tensors = [
            pb_utils.Tensor(name, output)
            for name, output in zip(self._output_names, outputs, strict=True)
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _respond_alone(self, arrays: Arrays) -> Any:
        try:
            return self._response(self._run([arrays]))
        except Exception as exc:  # onnxruntime raises many types; all become request errors
            message = f"onnxruntime could not run this request: {exc}"
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
