"""Export to ONNX with optimum: the student in fp32 and int8 (for Triton), the merged teacher in
fp32 (for the batch job); each with its serving tokenizer."""

import shutil
from pathlib import Path

from optimum.exporters.onnx import main_export
from optimum.onnxruntime import ORTQuantizer
from optimum.onnxruntime.configuration import AutoQuantizationConfig
from transformers import AutoTokenizer

from services.contracts.build_layout import (
    ONNX_TOKENIZER_FILE,
    STUDENT_FP32_FILE,
    STUDENT_INT8_FILE,
    TEACHER_ONNX_FILE,
)

__all__ = ["export_student", "export_teacher"]


def _export_fp32(model_dir: Path, out_dir: Path, opset: int) -> None:
    """`out_dir/model.onnx`: the classifier's graph in fp32, taking the tokenizer's tensors."""
    main_export(
        str(model_dir),
        output=out_dir,
        task="text-classification",
        opset=opset,
        do_validation=False,  # parity is measured on the task's test texts instead
        library_name="transformers",
    )


def _write_serving_tokenizer(model_dir: Path, path: Path, max_length: int) -> None:
    """The model's `tokenizer.json` with truncation at `max_length` and padding fixed."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    serving = tokenizer.backend_tokenizer
    serving.enable_truncation(max_length)
    serving.enable_padding(pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
    serving.save(str(path))


def export_student(student_dir: Path, out_dir: Path, max_length: int, opset: int = 17) -> None:
    """Write `STUDENT_FP32_FILE`, `STUDENT_INT8_FILE` and `ONNX_TOKENIZER_FILE` into `out_dir`."""
    scratch = out_dir / "scratch"
    _export_fp32(student_dir, scratch / "fp32", opset)
    quantizer = ORTQuantizer.from_pretrained(scratch / "fp32", file_name="model.onnx")
    # Dynamic quantization: int8 weights, activations quantized per batch at run time.
    config = AutoQuantizationConfig.avx2(is_static=False, per_channel=True, reduce_range=True)
    quantizer.quantize(config, save_dir=scratch / "int8")
    (scratch / "fp32" / "model.onnx").rename(out_dir / STUDENT_FP32_FILE)
    (scratch / "int8" / "model_quantized.onnx").rename(out_dir / STUDENT_INT8_FILE)
    shutil.rmtree(scratch)
    _write_serving_tokenizer(student_dir, out_dir / ONNX_TOKENIZER_FILE, max_length)


def export_teacher(teacher_dir: Path, out_dir: Path, max_length: int, opset: int = 17) -> None:
    """Write `TEACHER_ONNX_FILE` and `ONNX_TOKENIZER_FILE` into `out_dir`. fp32 only: the
    teacher's labels are what the cache answers, so they must be torch's."""
    scratch = out_dir / "scratch"
    _export_fp32(teacher_dir, scratch, opset)
    # With its weights file beside it (model.onnx_data) when the graph is over 2 GB.
    for produced in scratch.glob(f"{TEACHER_ONNX_FILE}*"):
        produced.rename(out_dir / produced.name)
    shutil.rmtree(scratch)
    _write_serving_tokenizer(teacher_dir, out_dir / ONNX_TOKENIZER_FILE, max_length)
