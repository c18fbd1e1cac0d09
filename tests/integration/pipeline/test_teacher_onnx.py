"""The build's ONNX teacher: exported from the teacher it names, recorded in the report, and
equal to torch's on identical token inputs."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from services.contracts.build_layout import BuildLayout
from services.pipeline.datasets import load_splits
from services.pipeline.onnx_classifier import OnnxTextClassifier
from services.pipeline.teacher import load_classifier


@pytest.mark.parametrize("task", ["topic", "sentiment"])
def test_onnx_teacher_matches_torch_on_the_same_tokens(tiny_build: Path, task: str) -> None:
    layout = BuildLayout(tiny_build)
    teacher = layout.read_teacher(task)
    assert teacher.onnx is not None
    assert teacher.onnx.model_file.parent == layout.teacher_onnx_dir(task)
    onnx = OnnxTextClassifier(teacher.onnx.model_file, teacher.onnx.tokenizer_file)
    assert onnx.provider == "CPUExecutionProvider"
    model, _ = load_classifier(teacher.model_dir)
    texts = [e.text for e in load_splits(layout.stage_dir(task, "data")).test]
    inputs = onnx.encode(texts)
    assert inputs["input_ids"].shape[1] <= teacher.training.max_length
    with torch.inference_mode():
        expected = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits.numpy()
    assert np.abs(onnx.run(inputs) - expected).max() < 1e-4

    recorded = json.loads((tiny_build / "report.json").read_text())["tasks"][task]["teacher"]
    assert recorded["onnx_max_logit_diff"] == teacher.onnx.max_abs_logit_diff < 1e-4


def test_an_onnx_teacher_of_another_teacher_version_is_none(
    tiny_build: Path, tmp_path: Path
) -> None:
    """An ONNX teacher left from an earlier teacher (say, a build interrupted after retraining
    it) is never taken for the current one."""
    source = BuildLayout(tiny_build)
    copy = BuildLayout(tmp_path / "build")
    for stage in ("teacher", "teacher_onnx"):
        copied = copy.stage_dir("topic", stage)
        copied.mkdir(parents=True)
        for path in source.stage_dir("topic", stage).iterdir():
            (copied / path.name).symlink_to(path)
    assert copy.read_teacher("topic").onnx is not None
    record = copy.teacher_onnx_dir("topic") / "teacher_onnx.json"
    stale = json.loads(record.read_text()) | {"teacher_version": "0123456789abcdef"}
    record.unlink()  # the link, not the build's record
    record.write_text(json.dumps(stale))
    assert copy.read_teacher("topic").onnx is None
