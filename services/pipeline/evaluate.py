"""Evaluation of one task's build: accuracy, agreement, ONNX parity, latency and bias."""

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from sklearn.metrics import accuracy_score, f1_score

from services.contracts.build_layout import (
    ONNX_TOKENIZER_FILE,
    STUDENT_FP32_FILE,
    STUDENT_INT8_FILE,
)
from services.contracts.build_report import (
    BiasReport,
    Evaluation,
    OnnxReport,
    StudentMetrics,
    TeacherMetrics,
)
from services.pipeline.bias import ProbeSentence, bias_summary
from services.pipeline.datasets import Example
from services.pipeline.onnx_classifier import OnnxTextClassifier
from services.pipeline.teacher import load_classifier
from services.pipeline.training import encode, predict_logits

__all__ = ["classification_metrics", "evaluate_task", "max_torch_onnx_diff", "median_latency_ms"]


def classification_metrics(labels: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(f1_score(labels, predictions, average="macro", zero_division=0)),
    }


def median_latency_ms(predict: Callable[[str], object], texts: Sequence[str]) -> float:
    """Median wall time of single-text calls, after one warm-up call."""
    predict(texts[0])
    durations = []
    for text in texts:
        started = time.perf_counter()
        predict(text)
        durations.append(time.perf_counter() - started)
    return statistics.median(durations) * 1000


def _torch_predictor(model_dir: Path, max_length: int) -> Callable[[str], object]:
    model, tokenizer = load_classifier(model_dir)

    @torch.inference_mode()
    def predict(text: str) -> object:
        return model(**encode(tokenizer, [text], max_length)).logits

    return predict


@torch.inference_mode()
def max_torch_onnx_diff(model_dir: Path, onnx_model: OnnxTextClassifier, texts: list[str]) -> float:
    """Largest logit difference between the torch model of `model_dir` and its ONNX export, on
    identical token inputs (the ONNX side's tokenizer)."""
    model, _ = load_classifier(model_dir)
    worst = 0.0
    for start in range(0, len(texts), 16):
        inputs = onnx_model.encode(texts[start : start + 16])
        expected = model(**{name: torch.from_numpy(a) for name, a in inputs.items()}).logits
        worst = max(worst, float(np.abs(onnx_model.run(inputs) - expected.numpy()).max()))
    return worst


def evaluate_task(
    labels: list[str],
    test: list[Example],
    max_length: int,
    teacher_max_length: int,
    teacher_dir: Path,
    teacher_test_logits: npt.NDArray[np.float32],
    student_dir: Path,
    onnx_dir: Path,
    latency_samples: int,
    probe: list[ProbeSentence],
    teacher_probe_predictions: list[int],
) -> Evaluation:
    texts = [example.text for example in test]
    gold = [example.label for example in test]
    teacher_predictions = teacher_test_logits.argmax(1)

    student, student_tokenizer = load_classifier(student_dir)
    student_predictions = predict_logits(
        student, student_tokenizer, texts, max_length, description="student test"
    ).argmax(1)

    tokenizer_path = onnx_dir / ONNX_TOKENIZER_FILE
    # On CPU, where Triton's KIND_CPU instances serve it, on any machine the build runs on.
    fp32 = OnnxTextClassifier(onnx_dir / STUDENT_FP32_FILE, tokenizer_path, provider="cpu")
    int8 = OnnxTextClassifier(onnx_dir / STUDENT_INT8_FILE, tokenizer_path, provider="cpu")
    fp32_predictions = np.concatenate(
        [fp32.logits(texts[i : i + 32]).argmax(1) for i in range(0, len(texts), 32)]
    )
    int8_predictions = np.concatenate(
        [int8.logits(texts[i : i + 32]).argmax(1) for i in range(0, len(texts), 32)]
    )

    latency_texts = texts[:latency_samples]
    teacher_metrics = classification_metrics(gold, teacher_predictions)
    student_metrics = classification_metrics(gold, student_predictions)
    int8_metrics = classification_metrics(gold, int8_predictions)
    teacher = TeacherMetrics(
        test_accuracy=teacher_metrics["accuracy"],
        test_macro_f1=teacher_metrics["macro_f1"],
        latency_ms_batch1=median_latency_ms(
            _torch_predictor(teacher_dir, teacher_max_length), latency_texts
        ),
    )
    student_report = StudentMetrics(
        test_accuracy=student_metrics["accuracy"],
        test_macro_f1=student_metrics["macro_f1"],
        agreement_with_teacher=float(np.mean(student_predictions == teacher_predictions)),
        latency_ms_batch1=median_latency_ms(
            _torch_predictor(student_dir, max_length), latency_texts
        ),
    )
    onnx = OnnxReport(
        max_abs_logit_diff=max_torch_onnx_diff(student_dir, fp32, texts[:128]),
        fp32_test_accuracy=classification_metrics(gold, fp32_predictions)["accuracy"],
        int8_agreement_with_fp32=float(np.mean(int8_predictions == fp32_predictions)),
        int8_test_accuracy=int8_metrics["accuracy"],
        int8_test_macro_f1=int8_metrics["macro_f1"],
        fp32_latency_ms_batch1=median_latency_ms(lambda t: fp32.logits([t]), latency_texts),
        int8_latency_ms_batch1=median_latency_ms(lambda t: int8.logits([t]), latency_texts),
        size_bytes_fp32=(onnx_dir / STUDENT_FP32_FILE).stat().st_size,
        size_bytes_int8=(onnx_dir / STUDENT_INT8_FILE).stat().st_size,
    )
    bias = None
    if probe:
        probe_texts = [sentence.text for sentence in probe]
        student_probe = [
            int(p)
            for i in range(0, len(probe_texts), 32)
            for p in int8.logits(probe_texts[i : i + 32]).argmax(1)
        ]
        student_bias = bias_summary(probe, student_probe, labels)
        teacher_bias = bias_summary(probe, teacher_probe_predictions, labels)
        bias = BiasReport(
            groups=student_bias.groups,
            sentences=student_bias.sentences,
            max_gap=student_bias.max_gap,
            max_gap_label=student_bias.max_gap_label,
            teacher_max_gap=teacher_bias.max_gap,
            teacher_max_gap_label=teacher_bias.max_gap_label,
            distribution=student_bias.distribution,
            teacher_distribution=teacher_bias.distribution,
        )
    return Evaluation(teacher=teacher, student=student_report, onnx=onnx, bias=bias)
