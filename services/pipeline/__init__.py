"""Model pipeline: data splits, LoRA teacher, distilled student, ONNX export, model repository."""
