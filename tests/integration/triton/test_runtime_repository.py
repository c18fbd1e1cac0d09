import shutil
import subprocess
import sys
import time
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


def _publish(model: Path, version: str, broken: str = "") -> None:
    partial = model / f".{version}.partial"
    shutil.copytree(model / "1", partial)
    if broken == "model":
        (partial / "model.onnx").unlink()
        (partial / "model.onnx").write_bytes(b"not an onnx graph")
    elif broken == "tokenizer":
        (partial / "tokenizer.json").unlink()
        (partial / "tokenizer.json").write_text("{not a tokenizer")
    partial.rename(model / version)


def test_a_replaced_version_is_mirrored_beside_its_successor_for_a_while(
    tiny_build: Path, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    shutil.copytree(tiny_build / "model_repository" / "topic", source / "topic")
    runtime_dir = tmp_path / "runtime"
    runtime = RuntimeRepository(source, runtime_dir, False, previous_version_seconds=0.5)
    runtime.sync()
    mirrored = parse_config((runtime_dir / "topic" / "config.pbtxt").read_text())
    assert mirrored.version_policy.latest.num_versions == 2

    def versions() -> list[str]:
        return sorted(p.name for p in (runtime_dir / "topic").iterdir() if p.is_dir())

    _publish(source / "topic", "2")
    assert runtime.sync().added == ["topic/2"]
    assert versions() == ["1", "2"]  # both served while the routers move
    time.sleep(0.6)
    assert runtime.sync().removed == ["topic/1"]
    assert versions() == ["2"]
    _publish(source / "topic", "3", broken="model")
    report = runtime.sync()
    assert "onnxruntime cannot load" in report.rejected["topic/3"]
    assert versions() == ["2"]  # a broken version never displaces the served one
    assert runtime.sync().rejected == {}  # and is not checked again until it changes
    # Nor does one whose files the routers could not load beside a good model file.
    _publish(source / "topic", "4", broken="tokenizer")
    report = runtime.sync()
    assert "the routers could not load it" in report.rejected["topic/4"]
    assert versions() == ["2"]
    shutil.rmtree(source / "topic" / "4")
    shutil.rmtree(source / "topic" / "3")
    shutil.rmtree(source / "topic" / "2")
    runtime.sync()
    assert versions() == ["1"]  # removing the newest folders rolls back


def test_by_default_the_replaced_version_stays_beside_its_successor(
    tiny_build: Path, tmp_path: Path
) -> None:
    """The rollback target and a canary's stable version; the one before both is released."""
    source = tmp_path / "source"
    shutil.copytree(tiny_build / "model_repository" / "topic", source / "topic")
    runtime_dir = tmp_path / "runtime"
    runtime = RuntimeRepository(source, runtime_dir, False)
    runtime.sync()
    _publish(source / "topic", "2")
    runtime.sync()
    time.sleep(0.2)
    assert runtime.sync().removed == []
    _publish(source / "topic", "3")
    assert runtime.sync().removed == ["topic/1"]
    assert sorted(p.name for p in (runtime_dir / "topic").iterdir() if p.is_dir()) == ["2", "3"]
