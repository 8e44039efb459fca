"""Hostile input to `adapt merge --blend-out` (with and without --out): every refusal is one line
before anything is written, a blend never holds values adaptsr itself refuses to load, and a
refusal names the file the user gave."""

import json

import pytest
from fakes.cli import one_line, tree
from fakes.models import one_block_edsr, save_tiny_safmn, write_random_adapter
from safetensors import safe_open
from safetensors.torch import save_file

from adaptsr.adapt.models import save_model


def write_adapter(model_path, path, seed):
    """A rank-2 adapter of the checkpoint at `model_path`, seeded random."""
    return write_random_adapter(path, seed, 2, model=str(model_path))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("merge")
    base = folder / "edsr.pth"
    save_model(one_block_edsr(), base)
    other = save_tiny_safmn(folder / "safmn.pth")
    return {
        "base": base,
        "a": write_adapter(base, folder / "a.safetensors", 1),
        "b": write_adapter(base, folder / "b.safetensors", 2),
        "other": write_adapter(other, folder / "other.safetensors", 3),
    }


@pytest.mark.parametrize(
    "out, words",
    [("exists.pth", "already exists"), ("merged.txt", ".safetensors file name")],
)
def test_a_bad_out_is_refused_before_the_blend_is_written(files, tmp_path, run_cli, out, words):
    (tmp_path / "exists.pth").write_bytes(b"mine")
    before = tree(tmp_path)
    code, _, err = run_cli(
        "merge", "--model", files["base"], "--adapter", f"{files['a']}:0.5",
        "--adapter", f"{files['b']}:0.5", "--blend-out", tmp_path / "blend.safetensors",
        "--out", tmp_path / out,
    )  # fmt: skip
    one_line(code, err, words)
    assert tree(tmp_path) == before  # no blend file beside the refusal


def test_a_blend_with_infinite_values_is_refused(files, tmp_path, run_cli):
    out = tmp_path / "blend.safetensors"
    code, _, err = run_cli(
        "merge", "--model", files["base"], "--adapter", f"{files['a']}:1e300",
        "--adapter", f"{files['b']}:1e300", "--blend-out", out,
    )  # fmt: skip
    one_line(code, err, "NaN or infinite")
    assert not out.exists()


def test_an_adapter_of_another_base_is_named_not_the_blend_file(files, tmp_path, run_cli):
    out = tmp_path / "blend.safetensors"
    code, _, err = run_cli(
        "merge", "--model", files["base"], "--adapter", files["other"], "--blend-out", out
    )
    line = one_line(code, err, str(files["other"]), "another base model")
    assert str(out) not in line and not out.exists()


@pytest.mark.parametrize("target", ["base", "a"])
def test_a_model_card_that_is_an_input_is_refused(files, tmp_path, run_cli, target):
    out = tmp_path / "m.pth"
    (tmp_path / "m.pth.modelcard.json").symlink_to(files[target])
    before = files[target].read_bytes()
    code, _, err = run_cli(
        "merge", "--model", files["base"], "--adapter", files["a"], "--out", out, "--force"
    )
    one_line(code, err, "the model card", "is the input file")
    assert not out.exists() and files[target].read_bytes() == before
    assert (tmp_path / "m.pth.modelcard.json").is_symlink()


def with_metadata(source, path, **changes):
    """A copy of the adapter file `source` at `path` with metadata keys replaced."""
    with safe_open(str(source), "pt") as f:
        metadata = {**f.metadata(), **changes}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (no __iter__)
    save_file(tensors, str(path), metadata=metadata)
    return path


@pytest.mark.parametrize(
    "degradation",
    ['{"type": "camera", "blur_sigma": NaN}', '{"type": "camera", "noise_sigma": 1e999}',
     '{"type": "camera", "jpeg": [-Infinity, 90]}'],
)  # fmt: skip
def test_a_degradation_with_nan_is_damaged_metadata(files, tmp_path, run_cli, degradation):
    adapter = with_metadata(files["a"], tmp_path / "a.safetensors", degradation=degradation)
    out = tmp_path / "m.pth"
    code, _, err = run_cli("merge", "--model", files["base"], "--adapter", adapter, "--out", out)
    one_line(code, err, "damaged metadata", "'degradation'")
    assert not out.exists() and not (tmp_path / "m.pth.modelcard.json").exists()
    # a preset's name and a finite table are kept in the card as they are
    fine = '{"type": "camera", "blur_sigma": 1.5}'
    for text in ("camera", fine):
        adapter = with_metadata(files["a"], tmp_path / "a.safetensors", degradation=text)
        code, _, err = run_cli(
            "merge", "--model", files["base"], "--adapter", adapter, "--out", out, "--force"
        )
        assert code == 0, err
        card = json.loads((tmp_path / "m.pth.modelcard.json").read_text())
        assert json.dumps(card["adaptsr"]["adapters"][0]["degradation"]) in (
            json.dumps(text),
            json.dumps(json.loads(fine)),
        )


@pytest.mark.parametrize("scale", ["²", "٢", "-2", "x2"])
def test_a_scale_int_refuses_is_damaged_metadata(files, tmp_path, run_cli, scale):
    adapter = with_metadata(files["a"], tmp_path / "a.safetensors", scale=scale)
    out = tmp_path / "m.pth"
    code, _, err = run_cli("merge", "--model", files["base"], "--adapter", adapter, "--out", out)
    one_line(code, err, "damaged metadata", "'scale'")
    assert not out.exists()
