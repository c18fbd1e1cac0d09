from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from services.contracts.build_report import ServingRecord
from services.contracts.model_repository import parse_config, render_config
from services.pipeline.repository import publish_directory, student_config


def test_student_config_targets_onnxruntime_with_dynamic_batching_when_asked() -> None:
    serving = ServingRecord(
        max_batch_size=16, dynamic_batching=True, max_queue_delay_us=300, instances=2, threads=3
    )
    text = render_config(student_config("topic", ["input_ids", "attention_mask"], 5, serving))
    config = parse_config(text)
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 16
    assert [(group.count, group.kind) for group in config.instance_group] == [
        (2, mc.ModelInstanceGroup.KIND_CPU)
    ]
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        ("input_ids", mc.TYPE_INT64, [-1]),
        ("attention_mask", mc.TYPE_INT64, [-1]),
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [
        ("logits", mc.TYPE_FP32, [5])
    ]
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8, 16]
    assert config.dynamic_batching.max_queue_delay_microseconds == 300
    assert config.parameters["intra_op_thread_count"].string_value == "3"


def test_student_config_on_cpu_runs_requests_side_by_side_unbatched() -> None:
    """The default: two single-threaded instances, no dynamic batcher (on CPU a batch costs
    the sum of its rows and runs on one instance while the other may idle)."""
    config = student_config("topic", ["input_ids", "attention_mask"], 5, ServingRecord())
    assert not config.HasField("dynamic_batching")
    assert [group.count for group in config.instance_group] == [2]
    assert config.parameters["intra_op_thread_count"].string_value == "1"


def test_student_config_takes_the_preferred_batch_sizes_given() -> None:
    serving = ServingRecord(max_batch_size=64, preferred_batch_sizes=[48, 8], dynamic_batching=True)
    config = student_config("intents", ["input_ids"], 3, serving)
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 48]


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
