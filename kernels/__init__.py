"""Triton kernels for the LoRA forward and backward, and their PyTorch reference paths."""
