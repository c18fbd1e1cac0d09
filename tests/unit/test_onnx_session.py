"""The one place onnxruntime sessions come from: the provider it picks, why, and its options.

A real tiny graph (built with onnx.helper) runs on this machine's CPU build; a stand-in
module plays the `onnxruntime-gpu` wheel on a machine without CUDA, which lists the CUDA
provider yet falls back to CPU.
"""

import logging
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from services.contracts import onnx_session
from services.contracts.onnx_session import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    CudaUnavailable,
    OnnxRuntimeMissing,
    create_session,
    cuda_verdict,
    session_provider,
)


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test is a process that has not looked at CUDA yet."""
    monkeypatch.setattr(onnx_session, "_verdict", None)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """y = relu(x), for float32 x of shape (any, 2)."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
    )
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_auto_on_the_cpu_build_runs_on_cpu_and_says_why_once(
    model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=onnx_session.__name__)
    session = create_session(model)
    assert session_provider(session) == CPU_PROVIDER
    x = np.array([[-1.0, 2.0]], dtype=np.float32)
    assert session.run(["y"], {"x": x})[0].tolist() == [[0.0, 2.0]]
    verdict = cuda_verdict()
    assert verdict is not None and not verdict.usable
    assert "no CUDA provider" in verdict.reason
    (line,) = [r.getMessage() for r in caplog.records]
    assert f"runs on {CPU_PROVIDER}; CUDA is not used: this onnxruntime build" in line
    assert "switchyard-serving[gpu]" in line

    create_session(model)
    assert len(caplog.records) == 1


def test_cuda_where_it_cannot_run_is_a_clear_error(model: Path) -> None:
    with pytest.raises(CudaUnavailable, match="cannot run on CUDA here: this onnxruntime build"):
        create_session(model, "cuda")


def test_cpu_asks_nothing_about_cuda(model: Path) -> None:
    assert session_provider(create_session(model, "cpu")) == CPU_PROVIDER
    assert cuda_verdict() is None


def test_threads_and_spinning_reach_the_session(model: Path) -> None:
    options = create_session(model, "cpu", threads=2, spinning=False).get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    default = create_session(model, "cpu").get_session_options()
    assert default.intra_op_num_threads == 0  # onnxruntime's choice


def test_without_onnxruntime_the_error_names_the_extras(
    model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(OnnxRuntimeMissing, match=r"switchyard-serving\[cpu\]") as caught:
        create_session(model)
    assert "switchyard-serving[gpu]" in str(caught.value)
    assert isinstance(caught.value, ImportError)


class _GpuWheelWithoutCuda:
    """What onnxruntime-gpu does on a machine without the CUDA libraries: it lists the CUDA
    provider, and a session asked for it logs an error and runs on CPU."""

    __file__ = "/nonexistent/onnxruntime/__init__.py"
    __version__ = "1.31.1"
    cuda_version = "13.0"

    def __init__(self) -> None:
        self.severities: list[int] = []
        self.sessions: list[list[Any]] = []

    def get_available_providers(self) -> list[str]:
        return [CUDA_PROVIDER, CPU_PROVIDER]

    def set_default_logger_severity(self, level: int) -> None:
        self.severities.append(level)

    def SessionOptions(self) -> Any:  # noqa: N802 - onnxruntime's name
        return SimpleNamespace(add_session_config_entry=lambda key, value: None)

    def InferenceSession(self, path: str, options: Any, providers: list[Any]) -> Any:  # noqa: N802
        self.sessions.append(providers)
        return SimpleNamespace(get_providers=lambda: [CPU_PROVIDER])


def test_a_cuda_build_that_falls_back_is_probed_quietly_once(
    model: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake = _GpuWheelWithoutCuda()
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    caplog.set_level(logging.INFO, logger=onnx_session.__name__)
    first = create_session(model)
    assert session_provider(first) == CPU_PROVIDER
    # Quiet while CUDA is tried, onnxruntime's default level afterwards.
    assert fake.severities == [4, 2]
    verdict = cuda_verdict()
    assert verdict is not None and not verdict.usable
    assert "CUDA provider does not load" in verdict.reason and "CUDA 13.0" in verdict.reason
    (record,) = caplog.records
    assert record.levelno == logging.WARNING

    # Later sessions go straight to CPU, and asking for CUDA says why it is not there.
    create_session(model)
    assert fake.sessions[-1] == [CPU_PROVIDER]
    assert fake.sessions[0][0] == (CUDA_PROVIDER, {"device_id": 0})
    with pytest.raises(CudaUnavailable, match="CUDA provider does not load"):
        create_session(model, "cuda")
    assert len(caplog.records) == 1
