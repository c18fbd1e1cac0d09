"""Model pipeline: task files, data checks and splits, LoRA teacher, distilled student, ONNX
export, model repository."""
