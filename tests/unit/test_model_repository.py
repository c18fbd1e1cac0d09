from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from services.contracts.model_repository import parse_config, render_config
from services.pipeline.repository import publish_directory, student_config


def test_student_config_targets_onnxruntime_with_dynamic_batching() -> None:
    text = render_config(student_config("topic", ["input_ids", "attention_mask"], 5, 16))
    config = parse_config(text)
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 16
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        ("input_ids", mc.TYPE_INT64, [-1]),
        ("attention_mask", mc.TYPE_INT64, [-1]),
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [
        ("logits", mc.TYPE_FP32, [5])
    ]
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8, 16]
    assert 0 < config.dynamic_batching.max_queue_delay_microseconds <= 1000


@pytest.mark.parametrize(
    "text",
    ['name: "x" max_batch_size: "lots"', 'nmae: "x"', 'name: "x" max_batch_size: 4'],
)
def test_parse_config_rejects_invalid_configs(text: str) -> None:
    with pytest.raises(ValueError, match="invalid Triton model config"):
        parse_config(text)


def test_publish_directory_replaces_the_old_folder(tmp_path: Path) -> None:
    target = tmp_path / "model_repository"
    for generation in ("old", "new"):
        staging = tmp_path / "staging"
        staging.mkdir()
        (staging / "marker").write_text(generation)
        publish_directory(staging, target)
    assert (target / "marker").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_repository"]
