"""Benchmarks: each route against its floor and against what a user would deploy instead."""
