"""The exporter's own ATen translations against PyTorch, in ONNX Runtime."""

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from adaptsr.export import translations


class _Sort(nn.Module):
    def __init__(self, dim: int, descending: bool):
        super().__init__()
        self.dim, self.descending = dim, descending

    def forward(self, x):
        values, indices = torch.sort(x, dim=self.dim, descending=self.descending, stable=True)
        return values, indices


@pytest.mark.parametrize(("dim", "descending"), [(-1, False), (1, True), (0, False)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.int64])
def test_sort_stable_matches_torch_with_ties(tmp_path, dim, descending, dtype):
    # Few distinct values: ties everywhere, so a sort that is not stable gives other indices.
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 4, (3, 17, 9), generator=g).to(dtype)
    path = tmp_path / "sort.onnx"
    torch.onnx.export(
        _Sort(dim, descending).eval(),
        (x,),
        str(path),
        dynamo=True,
        custom_translation_table=translations.table(),
        verbose=False,
    )
    got_values, got_indices = ort.InferenceSession(str(path)).run(None, {"x": x.numpy()})
    want_values, want_indices = torch.sort(x, dim=dim, descending=descending, stable=True)
    np.testing.assert_array_equal(got_values, want_values.numpy())
    np.testing.assert_array_equal(got_indices, want_indices.numpy())
