"""Export the student to ONNX with optimum, quantize it to int8, and write its serving tokenizer."""

import shutil
from pathlib import Path

from optimum.exporters.onnx import main_export
from optimum.onnxruntime import ORTQuantizer
from optimum.onnxruntime.configuration import AutoQuantizationConfig
from transformers import AutoTokenizer

from services.contracts.model_repository import TOKENIZER_FILE

__all__ = ["FP32_FILE", "INT8_FILE", "export_student"]

FP32_FILE = "model_fp32.onnx"
INT8_FILE = "model_int8.onnx"


def export_student(student_dir: Path, out_dir: Path, max_length: int, opset: int = 17) -> None:
    """Write `FP32_FILE`, `INT8_FILE` and `TOKENIZER_FILE` into `out_dir`."""
    scratch = out_dir / "scratch"
    main_export(
        str(student_dir),
        output=scratch / "fp32",
        task="text-classification",
        opset=opset,
        do_validation=False,  # parity is measured by the evaluation stage, on the test texts
        library_name="transformers",
    )
    quantizer = ORTQuantizer.from_pretrained(scratch / "fp32", file_name="model.onnx")
    # Dynamic quantization: int8 weights, activations quantized per batch at run time.
    config = AutoQuantizationConfig.avx2(is_static=False, per_channel=True, reduce_range=True)
    quantizer.quantize(config, save_dir=scratch / "int8")
    (scratch / "fp32" / "model.onnx").rename(out_dir / FP32_FILE)
    (scratch / "int8" / "model_quantized.onnx").rename(out_dir / INT8_FILE)
    shutil.rmtree(scratch)

    tokenizer = AutoTokenizer.from_pretrained(student_dir)
    serving = tokenizer.backend_tokenizer
    serving.enable_truncation(max_length)
    serving.enable_padding(pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
    serving.save(str(out_dir / TOKENIZER_FILE))
