"""ONNX translations for ATen operators that the dynamo exporter has none for.

Passed to `torch.onnx.export(custom_translation_table=...)`. Each is written with ONNX ops only
and checked against PyTorch in tests/test_translations.py (and by every export's parity check).
"""

from __future__ import annotations

import torch
from onnxscript import opset18 as op


def sort_stable(self, *, stable: bool | None = None, dim: int = -1, descending: bool = False):
    """aten.sort.stable (ATD groups its tokens with it) as TopK over the whole axis. TopK
    breaks ties by the lower index first, which is exactly a stable sort, so it serves
    `stable=True` and, as one of its valid orders, `stable=False`."""
    size = op.Reshape(op.Gather(op.Shape(self), dim, axis=0), op.Constant(value_ints=[1]))
    values, indices = op.TopK(self, size, axis=dim, largest=descending, sorted=True)
    return values, indices


def table() -> dict:
    return {torch.ops.aten.sort.stable: sort_stable}
