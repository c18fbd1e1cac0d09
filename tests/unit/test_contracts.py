"""The contracts every layer shares: model inputs, the model repository and the build folder."""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from tritonclient.grpc import model_config_pb2 as mc

from services.contracts.build_layout import (
    BuildLayout,
    StageMarker,
    read_stage_marker,
    write_stage_marker,
)
from services.contracts.build_report import (
    BuildReport,
    TaskReport,
    TeacherReport,
    TeacherTraining,
)
from services.contracts.model_io import TextEncoder, length_groups, softmax, token_lengths
from services.contracts.model_repository import (
    CONFIG_FILE,
    ModelCard,
    ModelVersion,
    latest_version,
    model_names,
    parse_config,
    render_config,
    version_dirs,
)

WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
PAD_ID = 1
UNK_ID = 0
VOCAB = {"[UNK]": UNK_ID, "[PAD]": PAD_ID, **{word: index + 2 for index, word in enumerate(WORDS)}}


def make_tokenizer(max_length: int | None = 8) -> Tokenizer:
    tokenizer = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    # Type id 1 on every real token, so token_type_ids are told apart from padding.
    tokenizer.post_processor = processors.TemplateProcessing(single="$A:1")
    if max_length is not None:
        tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(pad_id=PAD_ID, pad_token="[PAD]")
    return tokenizer


def ids(*words: str) -> list[int]:
    return [VOCAB.get(word, UNK_ID) for word in words]


# --- model_io -------------------------------------------------------------------------------


def test_encoder_reads_pad_id_and_max_length_from_a_saved_tokenizer(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    make_tokenizer(max_length=6).save(str(path))
    encoder = TextEncoder.from_file(path, ["input_ids", "attention_mask"])
    assert encoder.pad_id == PAD_ID
    assert encoder.max_length == 6
    assert encoder.input_names == ["input_ids", "attention_mask"]


def test_encode_pads_on_the_right_to_the_longest_text_without_buckets() -> None:
    encoder = TextEncoder(make_tokenizer(), ["input_ids", "attention_mask"])
    arrays = encoder.encode(["one two three", "four", "five nope"])
    assert arrays["input_ids"].dtype == np.int64
    assert arrays["input_ids"].tolist() == [
        ids("one", "two", "three"),
        [*ids("four"), PAD_ID, PAD_ID],
        [*ids("five"), UNK_ID, PAD_ID],
    ]
    assert arrays["attention_mask"].dtype == np.int64
    assert arrays["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]


def test_token_lengths_are_the_tokens_before_the_right_padding() -> None:
    encoder = TextEncoder(make_tokenizer(), ["input_ids", "attention_mask"])
    arrays = encoder.encode(["one two three", "four", "five nope"], [8])
    assert arrays["attention_mask"].shape == (3, 8)
    lengths = token_lengths(arrays["attention_mask"])
    assert lengths == [3, 1, 2]
    # A row with no token keeps one column; a mask with a hole counts to its last token.
    assert token_lengths(np.array([[0, 0, 0], [1, 0, 1]])) == [1, 3]
    assert token_lengths(np.zeros((2, 0), dtype=np.int64)) == [0, 0]
    assert length_groups([3, 1, 3, 2, 1]) == {3: [0, 2], 1: [1, 4], 2: [3]}


@pytest.mark.parametrize(
    ("words", "buckets", "length"),
    [
        (3, [2, 4, 6], 4),  # the smallest bucket that holds the longest text
        (4, [2, 4, 6], 4),  # a bucket exactly the text's length holds it
        (1, [2, 4, 6], 2),
        (7, [2, 4, 6], 8),  # none holds it: the tokenizer's max length
        (3, [16], 8),  # never beyond the tokenizer's max length
        (10, [2, 4], 8),  # texts are truncated to the max length
        (5, [], 5),  # no buckets: the longest text
    ],
)
def test_encode_picks_the_bucket_length(words: int, buckets: list[int], length: int) -> None:
    encoder = TextEncoder(make_tokenizer(max_length=8), ["input_ids", "attention_mask"])
    arrays = encoder.encode([" ".join(WORDS[:words]), "one"], buckets)
    kept = min(words, 8)
    assert arrays["input_ids"].shape == (2, length)
    assert arrays["input_ids"][0, :kept].tolist() == ids(*WORDS[:kept])
    assert (arrays["input_ids"][0, kept:] == PAD_ID).all()
    assert arrays["attention_mask"].sum(axis=1).tolist() == [kept, 1]


def test_encode_without_max_length_falls_back_to_the_longest_text() -> None:
    encoder = TextEncoder(make_tokenizer(max_length=None), ["input_ids", "attention_mask"])
    assert encoder.max_length is None
    arrays = encoder.encode([" ".join(WORDS[:7])], [2, 4])
    assert arrays["input_ids"].shape == (1, 7)


def test_encode_returns_only_the_requested_inputs_in_their_order() -> None:
    encoder = TextEncoder(make_tokenizer(), ["attention_mask", "input_ids"])
    arrays = encoder.encode(["one two"])
    assert list(arrays) == ["attention_mask", "input_ids"]


def test_encode_adds_token_type_ids_when_the_graph_takes_them() -> None:
    encoder = TextEncoder(make_tokenizer(), ["input_ids", "attention_mask", "token_type_ids"])
    arrays = encoder.encode(["one two three", "four"])
    assert arrays["token_type_ids"].dtype == np.int64
    assert arrays["token_type_ids"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_encoder_rejects_an_unknown_input_name() -> None:
    with pytest.raises(ValueError, match=r"unknown model inputs \['pixel_values'\]"):
        TextEncoder(make_tokenizer(), ["input_ids", "pixel_values"])


def test_softmax_rows_sum_to_one_and_keep_the_order() -> None:
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0], [-3.0, 4.0, 1.0]])
    probabilities = softmax(logits)
    assert probabilities.shape == (3, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert (np.argsort(probabilities, axis=1) == np.argsort(logits, axis=1)).all()
    np.testing.assert_allclose(probabilities[1], [1 / 3, 1 / 3, 1 / 3])


def test_softmax_of_huge_logits_is_finite_and_shift_invariant() -> None:
    probabilities = softmax([[1000.0, 999.0, -1000.0]])
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities, softmax([[1.0, 0.0, -1999.0]]))
    np.testing.assert_allclose(probabilities[0, 0] / probabilities[0, 1], np.e)


# --- model_repository -----------------------------------------------------------------------


def student_config(name: str = "topic") -> mc.ModelConfig:
    config = mc.ModelConfig(name=name, platform="onnxruntime_onnx", max_batch_size=8)
    for input_name in ("input_ids", "attention_mask"):
        config.input.add(name=input_name, data_type=mc.TYPE_INT64, dims=[-1])
    config.output.add(name="logits", data_type=mc.TYPE_FP32, dims=[3])
    return config


def write_model(repository: Path, name: str) -> Path:
    model_dir = repository / name
    model_dir.mkdir(parents=True)
    (model_dir / CONFIG_FILE).write_text(render_config(student_config(name)), encoding="utf-8")
    return model_dir


def test_model_names_lists_folders_with_a_config_in_name_order(tmp_path: Path) -> None:
    write_model(tmp_path, "topic")
    write_model(tmp_path, "intent")
    write_model(tmp_path, ".sentiment")  # being written
    (tmp_path / "no_config").mkdir()
    (tmp_path / "README").write_text("not a model")
    assert model_names(tmp_path) == ["intent", "topic"]


def test_version_dirs_are_numeric_visible_folders_sorted_by_number(tmp_path: Path) -> None:
    model_dir = tmp_path / "topic"
    for name in ("10", "2", "1", ".3", "latest", "v4"):
        (model_dir / name).mkdir(parents=True)
    (model_dir / "7").write_text("a file, not a version")
    assert [path.name for path in version_dirs(model_dir)] == ["1", "2", "10"]
    assert version_dirs(tmp_path / "missing") == []


def test_latest_version_is_the_highest_number(tmp_path: Path) -> None:
    for name in ("2", "10", ".11"):
        (tmp_path / "topic" / name).mkdir(parents=True)
    assert latest_version(tmp_path, "topic") == ModelVersion("topic", "10", tmp_path / "topic/10")
    assert ModelVersion.of(tmp_path, "topic", "10") == latest_version(tmp_path, "topic")


@pytest.mark.parametrize("folders", [[], [".1", "draft"]])
def test_latest_version_without_versions_is_file_not_found(
    tmp_path: Path, folders: list[str]
) -> None:
    for name in folders:
        (tmp_path / "topic" / name).mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no version of model 'topic'"):
        latest_version(tmp_path, "topic")


def test_model_version_reads_its_files(tmp_path: Path) -> None:
    version = ModelVersion.of(tmp_path, "topic", "3")
    version.path.mkdir(parents=True)
    assert version.model_file == tmp_path / "topic" / "3" / "model.onnx"
    assert version.tokenizer_file == tmp_path / "topic" / "3" / "tokenizer.json"
    (version.path / "labels.json").write_text(json.dumps(["world", "sports", "tech"]))
    card = {
        "task": "topic",
        "version": "3",
        "inputs": ["input_ids", "attention_mask"],
        "max_length": 64,
        "report": {"served_precision": "int8"},
    }
    (version.path / "model_card.json").write_text(json.dumps(card))
    assert version.labels() == ["world", "sports", "tech"]
    read = version.card()
    assert (read.task, read.version, read.inputs) == ("topic", "3", ["input_ids", "attention_mask"])
    assert (read.output, read.max_length, read.sha256) == ("logits", 64, "")
    assert read.model_extra == {"report": {"served_precision": "int8"}}


def test_model_card_is_frozen_and_requires_its_fields() -> None:
    card = ModelCard(task="topic", version="1", inputs=["input_ids"])
    with pytest.raises(pydantic.ValidationError):
        card.task = "intent"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="inputs"):
        ModelCard.model_validate({"task": "topic", "version": "1"})


def test_render_config_round_trips_through_a_config_file(tmp_path: Path) -> None:
    config = student_config()
    config.dynamic_batching.preferred_batch_size.extend([4, 8])
    path = write_model(tmp_path, "topic") / CONFIG_FILE
    path.write_text(render_config(config), encoding="utf-8")
    parsed = parse_config(path.read_text(encoding="utf-8"))
    assert parsed == config
    assert 'name: "topic"' in path.read_text(encoding="utf-8")


def test_parse_config_says_where_the_text_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"invalid Triton model config: 1:\d+ .*max_batch_size"):
        parse_config('name: "x" max_batch_size: "lots"')


@pytest.mark.parametrize("missing", ["name", "input", "output"])
def test_parse_config_requires_name_input_and_output(missing: str) -> None:
    config = student_config()
    config.ClearField(missing)
    text = str(config)  # protobuf's text format, as a hand-written file would be
    with pytest.raises(ValueError, match="name, input and output are required"):
        parse_config(text)
    with pytest.raises(ValueError, match="name, input and output are required"):
        render_config(config)


# --- build_report ---------------------------------------------------------------------------


TEACHER_TRAINING: dict[str, Any] = {
    "base_model": "qwen",
    "params": 1000,
    "trainable_params": 10,
    "trainable_fraction": 0.01,
    "lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]},
    "max_length": 128,
    "steps": 100,
    "best_step": 80,
    "validation_accuracy": 0.9,
}
METRICS: dict[str, Any] = {"test_accuracy": 0.9, "test_macro_f1": 0.88, "latency_ms_batch1": 3.5}
ONNX: dict[str, Any] = {
    "max_abs_logit_diff": 1e-4,
    "fp32_test_accuracy": 0.87,
    "int8_agreement_with_fp32": 0.99,
    "int8_test_accuracy": 0.86,
    "int8_test_macro_f1": 0.85,
    "fp32_latency_ms_batch1": 2.0,
    "int8_latency_ms_batch1": 1.0,
    "size_bytes_fp32": 400,
    "size_bytes_int8": 100,
}


def task_report_data() -> dict[str, Any]:
    return {
        "labels": ["world", "sports"],
        "split_sizes": {"train": 80, "validation": 10, "test": 10},
        "data": {
            "rows_read": 110,
            "unique_examples": 100,
            "duplicates_dropped": 9,
            "conflicting_labels_dropped": 1,
            "full_split_sizes": {"train": 800, "validation": 100, "test": 100},
        },
        "max_length": 64,
        "teacher": {**TEACHER_TRAINING, **METRICS},
        "student": {
            "base_model": "mpnet",
            "params": 100,
            "temperature": 2.0,
            "hard_label_weight": 0.5,
            "steps": 50,
            "best_step": 40,
            "validation_accuracy": 0.88,
            **METRICS,
            "agreement_with_teacher": 0.95,
        },
        "onnx": ONNX,
        "bias": None,
        "served_precision": "int8",
    }


def test_task_report_ignores_fields_a_newer_build_added() -> None:
    data = task_report_data()
    data["added_later"] = 1
    data["teacher"] = {**data["teacher"], "added_later": 2}
    report = TaskReport.model_validate(data)
    assert "added_later" not in report.model_dump_json()
    assert report.teacher.lora.target_modules == ["q_proj", "v_proj"]
    assert report.student.agreement_with_teacher == 0.95


def test_teacher_report_needs_both_training_and_metrics() -> None:
    report = TeacherReport.model_validate({**TEACHER_TRAINING, **METRICS})
    assert (report.best_step, report.test_macro_f1) == (80, 0.88)
    with pytest.raises(pydantic.ValidationError, match="test_accuracy"):
        TeacherReport.model_validate(TEACHER_TRAINING)


def test_task_report_rejects_an_unknown_precision() -> None:
    with pytest.raises(pydantic.ValidationError, match="served_precision"):
        TaskReport.model_validate({**task_report_data(), "served_precision": "fp16"})


def test_reports_are_frozen() -> None:
    report = TaskReport.model_validate(task_report_data())
    with pytest.raises(pydantic.ValidationError):
        report.max_length = 32  # type: ignore[misc]


# --- build_layout ---------------------------------------------------------------------------


def test_build_layout_places_every_file_under_its_root(tmp_path: Path) -> None:
    layout = BuildLayout(tmp_path)
    assert layout.marker == tmp_path / "switchyard-build.json"
    assert layout.report_file == tmp_path / "report.json"
    assert layout.model_repository == tmp_path / "model_repository"
    assert layout.base_models == tmp_path / "work" / "base_models"
    assert layout.stage_dir("topic", "student") == tmp_path / "work" / "topic" / "student"
    assert layout.split_file("topic", "test") == tmp_path / "work/topic/data/test.jsonl"
    assert layout.teacher_model_dir("topic") == tmp_path / "work/topic/teacher/model"


def test_stage_marker_round_trips(tmp_path: Path) -> None:
    marker = StageMarker(fingerprint="abc123", seconds=1.5)
    write_stage_marker(tmp_path, marker)
    assert read_stage_marker(tmp_path) == marker


def test_missing_or_unfinished_stage_has_no_marker(tmp_path: Path) -> None:
    assert read_stage_marker(tmp_path / "absent") is None
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "model.bin").write_bytes(b"half written")
    assert read_stage_marker(tmp_path / "unfinished") is None


def write_teacher(
    layout: BuildLayout,
    task: str,
    *,
    id2label: dict[str, str] | None = None,
    training: dict[str, Any] | None = None,
    fingerprint: str | None = "fp-1",
) -> None:
    stage = layout.stage_dir(task, "teacher")
    layout.teacher_model_dir(task).mkdir(parents=True)
    config = {"id2label": id2label or {"0": "world", "1": "sports"}}
    (layout.teacher_model_dir(task) / "config.json").write_text(json.dumps(config))
    (stage / "teacher.json").write_text(
        json.dumps(TEACHER_TRAINING if training is None else training)
    )
    if fingerprint is not None:
        write_stage_marker(stage, StageMarker(fingerprint=fingerprint, seconds=2.0))


def test_read_teacher_gives_labels_in_id_order_and_the_fingerprint_as_version(
    tmp_path: Path,
) -> None:
    layout = BuildLayout(tmp_path)
    id2label = {"2": "tech", "0": "world", "10": "art", "1": "sports"}
    id2label |= {str(index): f"label{index}" for index in range(3, 10)}
    write_teacher(layout, "topic", id2label=id2label, fingerprint="f00d")
    teacher = layout.read_teacher("topic")
    assert teacher.labels == [
        "world",
        "sports",
        "tech",
        *(f"label{i}" for i in range(3, 10)),
        "art",
    ]
    assert teacher.version == "f00d"
    assert teacher.task == "topic"
    assert teacher.model_dir == layout.teacher_model_dir("topic")
    assert teacher.training == TeacherTraining.model_validate(TEACHER_TRAINING)


def test_read_teacher_of_an_unfinished_stage_is_a_value_error(tmp_path: Path) -> None:
    layout = BuildLayout(tmp_path)
    write_teacher(layout, "topic", fingerprint=None)
    with pytest.raises(ValueError, match=r"teacher stage of 'topic'.*did not finish"):
        layout.read_teacher("topic")


def test_read_teacher_with_an_older_teacher_json_is_a_value_error(tmp_path: Path) -> None:
    layout = BuildLayout(tmp_path)
    old = {key: value for key, value in TEACHER_TRAINING.items() if key != "best_step"}
    write_teacher(layout, "topic", training=old)
    with pytest.raises(ValueError, match=r"teacher\.json lacks fields this version needs"):
        layout.read_teacher("topic")


def test_built_teachers_lists_tasks_whose_teacher_stage_finished(tmp_path: Path) -> None:
    layout = BuildLayout(tmp_path)
    assert layout.built_teachers() == []
    write_teacher(layout, "topic")
    write_teacher(layout, "intent")
    write_teacher(layout, "unfinished", fingerprint=None)
    (layout.stage_dir("data_only", "data")).mkdir(parents=True)
    write_stage_marker(
        layout.stage_dir("data_only", "data"), StageMarker(fingerprint="x", seconds=0)
    )
    assert layout.built_teachers() == ["intent", "topic"]


def test_read_report_is_none_until_the_build_finished_then_round_trips(tmp_path: Path) -> None:
    layout = BuildLayout(tmp_path)
    assert layout.read_report() is None
    report = BuildReport(
        profile="tiny", seed=13, tasks={"topic": TaskReport.model_validate(task_report_data())}
    )
    layout.report_file.write_text(report.model_dump_json(indent=2), encoding="utf-8")
    assert layout.read_report() == report
