"""Adapter metadata is checked, not trusted, even when the base fingerprint matches: an edited
dtype, scaling rule, arch or scale is refused in one line naming the key and the file, before
anything is merged."""

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import adaptsr


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("meta")
    model = adaptsr.load_model("safmn-x4")
    adaptsr.inject_lora(model, {"to_feat": 2, "feats.0.ccm.ccm.0": 2})
    return adaptsr.save_adapter(model, tmp / "a.safetensors")


def _edited(adapter, path, dtype=None, **meta):
    """A copy of the adapter with metadata keys replaced and its tensors cast to dtype."""
    with safe_open(str(adapter), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        metadata = {**f.metadata(), **meta}
    if dtype is not None:
        tensors = {k: t.to(dtype) for k, t in tensors.items()}
    save_file(tensors, str(path), metadata=metadata)
    return path


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"scaling": "alpha*r"}, "key 'scaling' is 'alpha*r'"),  # not a rule adaptsr applies
        ({"mode": "ia3"}, "key 'mode' is 'ia3'"),
        ({"arch": "SwinIR"}, "key 'arch' is 'SwinIR', but the model is 'SAFMN'"),
        ({"scale": "2"}, "key 'scale' is 2, but the model is x4"),
        ({"scale": "0"}, "key 'scale' '0' is not a positive whole number"),
        ({"dtype": torch.int32}, "holds int32 values"),
        ({"dtype": torch.bool}, "holds bool values"),
    ],
)
def test_edited_metadata_is_refused_before_merging(run_cli, adapter, tmp_path, change, fragment):
    edited = _edited(adapter, tmp_path / "edited.safetensors", **change)
    out = tmp_path / "merged.safetensors"
    args = ["--adapter", edited, "--out", out, "--allow-random-base"]
    code, _, err = run_cli("merge", "--model", "safmn-x4", *args)
    assert code == 1 and err.count("\n") == 1, err
    assert fragment in err and str(edited) in err, err
    assert not out.exists()


def test_metadata_that_agrees_with_the_model_merges(run_cli, adapter, tmp_path):
    for i, change in enumerate(({}, {"arch": ""}, {"scale": ""}, {"dtype": torch.float16})):
        edited = _edited(adapter, tmp_path / f"ok{i}.safetensors", **change)
        out = tmp_path / f"merged{i}.safetensors"
        args = ["--adapter", edited, "--out", out, "--allow-random-base"]
        code, _, err = run_cli("merge", "--model", "safmn-x4", *args)
        assert code == 0 and out.is_file(), (change, err)
