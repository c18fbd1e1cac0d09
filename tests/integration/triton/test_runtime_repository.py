import subprocess
import sys
from pathlib import Path

from services.contracts.model_repository import parse_config
from services.triton.runtime_repository import RUNNER_FILE, RuntimeRepository


def test_runtime_mirror_keeps_the_contract_and_leaves_the_source_alone(
    tiny_build: Path, tmp_path: Path
) -> None:
    source = tiny_build / "model_repository"
    source_config = (source / "topic" / "config.pbtxt").read_text()
    runtime = RuntimeRepository(source, tmp_path / "runtime", response_cache=True, onnx_threads=1)
    report = runtime.sync()
    assert sorted(report.added) == ["sentiment/1", "topic/1"]
    assert runtime.sync().added == []  # idempotent

    original = parse_config(source_config)
    mirrored = parse_config((tmp_path / "runtime" / "topic" / "config.pbtxt").read_text())
    assert mirrored.backend == "python" and not mirrored.platform
    assert mirrored.input == original.input and mirrored.output == original.output
    assert mirrored.max_batch_size == original.max_batch_size
    assert mirrored.dynamic_batching == original.dynamic_batching
    assert mirrored.response_cache.enable
    assert mirrored.parameters["intra_op_thread_count"].string_value == "1"
    version = tmp_path / "runtime" / "topic" / "1"
    assert (version / "model.py").resolve() == RUNNER_FILE
    assert (version / "model.onnx").resolve() == (source / "topic" / "1" / "model.onnx").resolve()
    assert (source / "topic" / "config.pbtxt").read_text() == source_config


def test_serving_imports_no_torch() -> None:
    probe = (
        "import sys, services.cli, services.triton.server, services.triton.runtime_repository, "
        "services.pipeline.onnx_classifier; print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
