"""Fault, bad-input and soak scenarios run against real Redis, Triton and router processes."""
