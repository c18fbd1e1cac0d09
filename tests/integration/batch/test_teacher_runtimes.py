"""The batch job's teacher in its two runtimes: the ONNX export (the default) labels as the
torch model does, and a build without the export says how to get one."""

import os
import shutil
from pathlib import Path

import pytest

from services.batch.errors import BatchError
from services.batch.teacher import TeacherInfo
from services.contracts.build_layout import BuildLayout


def test_onnx_and_torch_give_the_same_labels_and_scores(
    tiny_build: Path, sentiment_texts: list[str]
) -> None:
    texts = sentiment_texts[:96]
    onnx = TeacherInfo.read(tiny_build, "sentiment")
    torch = TeacherInfo.read(tiny_build, "sentiment", "torch")
    assert onnx.describe() == {"teacher": "model", "runtime": "onnx"}
    assert torch.describe() == {"teacher": "model", "runtime": "torch"}
    # The runtime is no part of the teacher's identity: a run resumed with the other one is
    # the same run.
    assert onnx.version == torch.version
    expected = torch.labeller(32, threads=1).label(texts)
    got = onnx.labeller(32, threads=1).label(texts)
    assert [a.label for a in got] == [a.label for a in expected]
    for a, b in zip(got, expected, strict=True):
        assert a.scores.keys() == b.scores.keys()
        assert max(abs(a.scores[name] - b.scores[name]) for name in a.scores) < 1e-4


def test_a_build_without_the_onnx_teacher_says_what_to_do(tiny_build: Path, tmp_path: Path) -> None:
    build = tmp_path / "build"
    layout = BuildLayout(build)
    layout.task_work("topic").mkdir(parents=True)
    # The teacher stage alone, as a build from before the ONNX teacher left it.
    teacher = BuildLayout(tiny_build).stage_dir("topic", "teacher")
    shutil.copytree(teacher, layout.stage_dir("topic", "teacher"), copy_function=os.link)
    with pytest.raises(BatchError) as raised:
        TeacherInfo.read(build, "topic")
    message = str(raised.value)
    assert "no ONNX teacher" in message
    assert f"switchyard models build --out {build}" in message
    assert "--teacher-runtime torch" in message
    assert TeacherInfo.read(build, "topic", "torch").runtime == "torch"
