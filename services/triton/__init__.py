"""Serving the model repository with a real NVIDIA Triton Inference Server."""
