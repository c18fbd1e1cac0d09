"""End-to-end: the tiny build of both tasks, its model repository, report, parity and reruns."""

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

from services.contracts.model_repository import parse_config
from services.pipeline.datasets import load_splits
from services.pipeline.onnx_classifier import OnnxTextClassifier
from tests.integration.conftest import TINY_BUILD_OPTIONS, run_switchyard

REPORT_KEYS = {
    "teacher": {
        "base_model", "params", "trainable_params", "trainable_fraction",
        "test_accuracy", "test_macro_f1", "latency_ms_batch1", "onnx_max_logit_diff",
    },
    "student": {
        "params", "test_accuracy", "test_macro_f1", "agreement_with_teacher", "latency_ms_batch1",
    },
    "onnx": {
        "max_abs_logit_diff", "int8_agreement_with_fp32", "int8_test_accuracy",
        "fp32_latency_ms_batch1", "int8_latency_ms_batch1", "size_bytes_fp32", "size_bytes_int8",
    },
}  # fmt: skip


def test_model_repository_layout_and_configs(tiny_build: Path) -> None:
    repository = tiny_build / "model_repository"
    assert sorted(p.name for p in repository.iterdir()) == ["sentiment", "topic"]
    for task, num_labels in (("topic", 5), ("sentiment", 3)):
        config = parse_config((repository / task / "config.pbtxt").read_text())
        assert config.name == task
        assert config.output[0].dims == [num_labels]
        version = repository / task / "1"
        assert sorted(p.name for p in version.iterdir()) == [
            "labels.json", "model.onnx", "model_card.json", "tokenizer.json",
        ]  # fmt: skip
        card = json.loads((version / "model_card.json").read_text())
        assert card["labels"] == json.loads((version / "labels.json").read_text())
        assert len(card["labels"]) == num_labels
        classifier = OnnxTextClassifier(version / "model.onnx", version / "tokenizer.json")
        assert [i.name for i in config.input] == classifier.input_names == card["inputs"]
        logits = classifier.logits(["a short text", "another, somewhat longer, text to classify"])
        assert logits.shape == (2, num_labels)


def test_report_has_every_metric(tiny_build: Path) -> None:
    report = json.loads((tiny_build / "report.json").read_text())
    assert report["profile"] == "quick"
    for task, result in report["tasks"].items():
        assert result["split_sizes"]["train"] == 80
        assert result["split_sizes"]["test"] == 48
        for section, keys in REPORT_KEYS.items():
            assert keys <= result[section].keys(), (task, section)
        teacher = result["teacher"]
        assert 0 < teacher["trainable_params"] < teacher["params"]
        assert teacher["trainable_fraction"] < 0.02
        assert result["student"]["params"] < teacher["params"]
        assert result["onnx"]["size_bytes_int8"] < result["onnx"]["size_bytes_fp32"] / 3
    bias = report["tasks"]["sentiment"]["bias"]
    assert bias["groups"] == 13
    assert 0 <= bias["max_gap"] <= 1 and 0 <= bias["teacher_max_gap"] <= 1
    shares = bias["distribution"]["religion"]
    assert abs(sum(shares.values()) - 1) < 1e-9


def test_onnx_fp32_matches_torch_and_int8_tracks_fp32(tiny_build: Path) -> None:
    onnx_dir = tiny_build / "work" / "topic" / "onnx"
    texts = [e.text for e in load_splits(tiny_build / "work" / "topic" / "data").test]
    student = AutoModelForSequenceClassification.from_pretrained(
        tiny_build / "work" / "topic" / "student" / "model"
    ).eval()
    fp32 = OnnxTextClassifier(onnx_dir / "model_fp32.onnx", onnx_dir / "tokenizer.json")
    inputs = fp32.encode(texts[:16])
    with torch.inference_mode():
        expected = student(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits.numpy()
    assert np.abs(fp32.run(inputs) - expected).max() < 1e-4
    int8 = OnnxTextClassifier(onnx_dir / "model_int8.onnx", onnx_dir / "tokenizer.json")
    assert np.abs(int8.run(inputs) - expected).max() < 0.5


def test_rerun_reuses_every_stage_and_resumes_a_removed_one(tiny_build: Path) -> None:
    before = json.loads((tiny_build / "report.json").read_text())
    rerun = run_switchyard("models", "build", "--out", str(tiny_build), *TINY_BUILD_OPTIONS)
    assert rerun.stdout.count("up to date, reused") == 14  # 7 stages x 2 tasks
    assert json.loads((tiny_build / "report.json").read_text()) == before

    shutil.rmtree(tiny_build / "work" / "topic" / "onnx")
    resumed = run_switchyard(
        "models", "build", "--out", str(tiny_build), "--tasks", "topic", *TINY_BUILD_OPTIONS
    )
    assert "topic/teacher: up to date" in resumed.stdout
    assert "topic/onnx: up to date" not in resumed.stdout
    assert (tiny_build / "work" / "topic" / "onnx" / "model_int8.onnx").exists()
    # A build of one task keeps the other task's published model and report entry.
    assert (tiny_build / "model_repository" / "sentiment" / "1" / "model.onnx").exists()
    after = json.loads((tiny_build / "report.json").read_text())
    assert after["tasks"]["sentiment"] == before["tasks"]["sentiment"]


def test_same_seed_gives_same_split_and_metrics(tiny_build: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    run_switchyard("models", "build", "--out", str(again), "--tasks", "topic", *TINY_BUILD_OPTIONS)
    for split in ("train", "validation", "test"):
        first = (tiny_build / "work" / "topic" / "data" / f"{split}.jsonl").read_bytes()
        assert (again / "work" / "topic" / "data" / f"{split}.jsonl").read_bytes() == first
    first_report = json.loads((tiny_build / "report.json").read_text())["tasks"]["topic"]
    second_report = json.loads((again / "report.json").read_text())["tasks"]["topic"]
    for model in ("teacher", "student"):
        assert (
            abs(first_report[model]["test_accuracy"] - second_report[model]["test_accuracy"])
            <= 0.05
        )
