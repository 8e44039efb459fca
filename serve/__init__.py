"""Inference backends, tiled inference and benchmarks (importable without torch)."""
