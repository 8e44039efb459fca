"""ONNX export: parity with PyTorch, merged == base structurally, dynamic window attention, fp16.

Small configurations of each architecture keep every export to a few seconds on 2 cores.
"""

import json

import numpy as np
import onnx
import pytest
import torch
from fakes.cli import one_line

from adaptsr.adapt.archs import build_small
from adaptsr.adapt.lora import adapter_parameters, inject_lora, save_adapter
from adaptsr.adapt.models import load_model, model_from_state_dict, save_model
from adaptsr.core.contracts import ExportReport
from adaptsr.core.errors import UserError
from adaptsr.core.images import synthetic_image
from adaptsr.export import parity
from adaptsr.export.onnx import PARITY_TOL, export_onnx, load_merged, plan, report_path
from adaptsr.export.rewrites import export_rewrites, reference_forward, shifted_window_mask
from adaptsr.export.tensorrt import profile_shapes, read_onnx_input
from adaptsr.export.trt_verify import photo_batch

# What these tests need beyond each profile's small configuration (adapt/archs/): windows of 8
# and two blocks (a shifted window) for the rewrites' masks, more width or depth elsewhere.
BIGGER = {
    "SAFMN": dict(dim=16),
    "SwinIR": dict(img_size=32, window_size=8, embed_dim=16, depths=[2]),
    "DRCT": dict(img_size=32, window_size=8, embed_dim=16, depths=(2,), gc=8),
    "Compact": dict(num_feat=16, num_conv=4),
    "RCAN": dict(n_resblocks=2),
    "HAT": dict(
        img_size=32, window_size=8, embed_dim=16, depths=(2,), compress_ratio=2, mlp_ratio=4.0
    ),
}


def small(arch: str, seed: int = 0) -> torch.nn.Module:
    """A tiny, randomly initialised model of `arch`, loaded the way checkpoints are."""
    torch.manual_seed(seed)
    m = build_small(arch, **BIGGER.get(arch, {}))
    model = model_from_state_dict(m.state_dict(), name=f"small-{arch}")
    assert model.adaptsr_info.arch == arch
    return model


def with_random_adapter(arch: str, tmp_path, rank: int = 2):
    """Base checkpoint + adapter file with non-zero random adapters, and the unmerged model."""
    base_path = tmp_path / f"{arch}.safetensors"
    save_model(small(arch), base_path)
    lora = load_model(base_path)
    inject_lora(lora, rank)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in adapter_parameters(lora):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    adapter_path = tmp_path / f"{arch}.lora.safetensors"
    save_adapter(lora.eval(), adapter_path)
    return base_path, adapter_path, lora


def ort_output(path, x: np.ndarray) -> np.ndarray:
    return parity.run(parity.session(path), x)


# ---------------------------------------------------------------------------------------------
# merged exports: parity, structural identity with the base, the merge itself


@pytest.mark.parametrize("arch", ["EDSR", "SAFMN", "SwinIR", "DRCT", "Compact", "RCAN"])
def test_merged_export_is_the_base_graph_with_the_adapted_function(arch, tmp_path):
    base_path, adapter_path, lora = with_random_adapter(arch, tmp_path)
    merged, info = load_merged(str(base_path), adapter_path)
    out = tmp_path / "merged.onnx"
    report = export_onnx(
        merged, out, tile=(16, 24), adapter=info, base=load_model(base_path), latency_rounds=6,
        latency_max_rounds=6,
    )  # fmt: skip
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 18
    assert report.parity.max_abs <= PARITY_TOL
    structure = report.zero_overhead.structure
    assert structure.identical, structure.differences
    assert structure.params[0] == structure.params[1] > 0
    lat = report.zero_overhead.latency
    assert lat.ci_low <= lat.ratio <= lat.ci_high and lat.rounds == 6
    # The ONNX computes the adapted function: the unmerged LoRA model, not the base.
    x = synthetic_image(16, 24, seed=5)[None]
    got = ort_output(out, x)
    with torch.no_grad():
        adapted = lora(torch.from_numpy(x)).numpy()
        base = load_model(base_path)(torch.from_numpy(x)).numpy()
    assert np.abs(got - adapted).max() < 1e-4
    assert np.abs(got - base).max() > 1e-3
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["architecture"] == arch and meta["scale"] == "2" and meta["merged"] == "true"
    assert meta["adapter_fingerprint"] == info.fingerprint
    assert json.loads(meta["rank_summary"])["max"] == 2
    written = json.loads(report_path(out).read_text())
    assert written["zero_overhead"]["structure"]["identical"] and written["version"] == 1
    assert ExportReport.from_json(written, report_path(out)) == report  # what was returned


def test_cli_merged_export_edsr(run_cli, tmp_path):
    base_path, adapter_path, _ = with_random_adapter("EDSR", tmp_path)
    out = tmp_path / "edsr.onnx"
    code, stdout, stderr = run_cli(
        "export", "onnx", "--model", base_path, "--adapter", adapter_path, "--merged",
        "--tile", "16", "24", "--out", out, "--latency-rounds", "6", "--latency-max-rounds", "6",
    )  # fmt: skip
    assert code == 0, stderr
    assert "parity vs PyTorch: max abs" in stdout and "the base graph node for node: PASS" in stdout
    report = json.loads(report_path(out).read_text())
    assert report["zero_overhead"]["structure"]["verdict"] == "PASS"
    assert {"ratio", "ci_low", "ci_high", "verdict"} <= set(report["zero_overhead"]["latency"])
    # an existing output is never overwritten without --force
    code, _, stderr = run_cli("export", "onnx", "--model", base_path, "--tile", "16", "16",
                              "--out", out)  # fmt: skip
    assert code == 1 and "already exists" in stderr


def test_span_reparameterized_conv_exports(tmp_path):
    model = small("SPAN")
    report = export_onnx(model, tmp_path / "span.onnx", tile=(16, 16))
    assert report.parity.max_abs <= PARITY_TOL
    assert any("re-parameterized" in r for r in report.rewrites)


# ---------------------------------------------------------------------------------------------
# dynamic shapes


@pytest.mark.parametrize("arch", ["SwinIR", "DRCT", "HAT"])
def test_window_attention_exports_with_dynamic_size_and_fp16(arch, tmp_path):
    model = small(arch)
    out = tmp_path / f"{arch}.onnx"
    report = export_onnx(model, out, dynamic=True, fp16=True)
    sizes = [tuple(s) for s in report.spec.checked_sizes]
    assert len(set(sizes)) == 3 and any(h % 8 or w % 8 for h, w in sizes)
    assert report.parity.max_abs <= PARITY_TOL
    assert report.fp16.min_psnr_db >= 50
    islands = report.fp16.fp32_islands
    assert islands["LayerNormalization"] >= 4 and islands["Softmax"] >= 1 and islands["Add"] >= 2
    fp16_model = onnx.load(out)
    assert fp16_model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert fp16_model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = [d.dim_param for d in fp16_model.graph.input[0].type.tensor_type.shape.dim[2:]]
    assert all(dims)
    # a fourth size, never seen by the export: fp16 graph vs the PyTorch model
    x = synthetic_image(21, 35, seed=9)[None]
    with torch.no_grad():
        want = reference_forward(model, torch.from_numpy(x)).numpy()
    assert parity.psnr(ort_output(out, x), want) >= 50


def test_safmn_adaptive_pooling_exports_dynamically(tmp_path):
    model = small("SAFMN")
    out = tmp_path / "safmn.onnx"
    report = export_onnx(model, out, dynamic=True)
    assert report.parity.max_abs <= PARITY_TOL
    assert all(h % 8 == 0 and w % 8 == 0 for h, w in report.spec.checked_sizes)
    x = parity.random_input(48, 72, seed=3)
    with torch.no_grad():
        assert np.abs(ort_output(out, x) - model(torch.from_numpy(x)).numpy()).max() <= 1e-4


def test_shifted_window_mask_matches_the_original():
    model = small("SwinIR")
    block = model.layers[0].residual_group.blocks[1]
    assert block.shift_size > 0
    for h, w in [(8, 8), (16, 24), (32, 16)]:
        x = torch.zeros(1, h, w, 16)
        ours = shifted_window_mask(h, w, block.window_size, block.shift_size, x)
        assert torch.equal(ours, block.calculate_mask((h, w)))


def test_rewrites_are_undone_after_export():
    model = small("SwinIR")
    x = torch.rand(1, 3, 19, 27)
    with torch.no_grad():
        before = model(x)
        with export_rewrites(model) as names:
            assert len(names) == 3
            patched = model(x)
        after = model(x)
    assert torch.equal(before, after) and torch.equal(before, patched)
    assert "forward" not in vars(model.layers[0].residual_group.blocks[0])
    # HAT's rewrite also swaps a module-level function: restored too
    import spandrel.architectures.HAT.__arch.HAT as hat_module

    original, hat = hat_module.window_reverse, small("HAT")
    with torch.no_grad():
        want = hat(x)
        with export_rewrites(hat):
            assert hat_module.window_reverse is not original
            assert torch.allclose(hat(x), want, atol=1e-6)
    assert hat_module.window_reverse is original


# ---------------------------------------------------------------------------------------------
# bad input: one clear error, nothing written


def test_adapter_for_another_base_is_refused(run_cli, tmp_path):
    _, adapter_path, _ = with_random_adapter("EDSR", tmp_path)
    other = tmp_path / "other.safetensors"
    save_model(small("EDSR", seed=7), other)
    out = tmp_path / "x.onnx"
    code, _, stderr = run_cli("export", "onnx", "--model", other, "--adapter", adapter_path,
                              "--merged", "--tile", "16", "16", "--out", out)  # fmt: skip
    assert code == 1 and "another base model" in stderr
    assert stderr.count("\n") == 1 and not list(tmp_path.glob("x*"))
    code, _, stderr = run_cli("export", "onnx", "--model", other, "--adapter", adapter_path,
                              "--tile", "16", "16", "--out", out)  # fmt: skip
    assert code == 2 and "add --merged" in stderr and not list(tmp_path.glob("x*"))


def test_tile_must_meet_size_requirements(run_cli, tmp_path):
    path = tmp_path / "safmn.safetensors"
    save_model(small("SAFMN"), path)
    out = tmp_path / "x.onnx"
    code, _, stderr = run_cli("export", "onnx", "--model", path, "--tile", "20", "24", "--out", out)
    assert code == 1 and "multiple of 8" in stderr and not out.exists()
    with pytest.raises(UserError, match="at least 16"):
        plan(small("SwinIR"), False, (8, 32))
    with pytest.raises(UserError, match="either --dynamic or --tile"):
        plan(small("SwinIR"), True, (32, 32))
    with pytest.raises(UserError, match="opset"):
        plan(small("SwinIR"), True, None, opset=17)
    with pytest.raises(UserError, match="opset 99 is newer than the installed onnx knows"):
        plan(small("SwinIR"), True, None, opset=99)  # refused before the export, not after
    code, _, stderr = run_cli("export", "onnx", "--model", path, "--merged", "--dynamic",
                              "--out", out)  # fmt: skip
    assert code == 2 and "--merged needs --adapter" in stderr


class _Unsupported(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        from adaptsr.adapt.models import ModelInfo

        self.adaptsr_info = ModelInfo("odd", "Odd", 1, 3, 3, 1, 1, "supported", True, True)

    def forward(self, x):
        y = self.conv(x)
        return y + torch.linalg.svdvals(y[..., :4, :4]).sum()


def test_unsupported_operator_is_one_clear_error(tmp_path):
    out = tmp_path / "odd.onnx"
    with pytest.raises(UserError, match=r"unsupported operator aten\._linalg_svd"):
        export_onnx(_Unsupported().eval(), out, tile=(16, 16))
    assert not list(tmp_path.iterdir())


def test_parity_failure_writes_nothing(tmp_path, monkeypatch):
    """A graph that disagrees with PyTorch (simulated: the reference is perturbed) is refused."""
    import adaptsr.export.onnx as export_module

    monkeypatch.setattr(export_module, "reference_forward", lambda m, x: m(x) + 1e-3)
    with pytest.raises(UserError, match="differs from PyTorch"):
        export_onnx(small("Compact"), tmp_path / "c.onnx", tile=(16, 16))
    assert not list(tmp_path.iterdir())


class Overflowing(torch.nn.Module):
    """A x2 model whose activations pass 65504 on the way (x 1000 x 1000, then / 1000 / 1000)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 12, 3, padding=1)

    def forward(self, x):
        y = self.conv(x) * 1000.0 * 1000.0
        return torch.nn.functional.pixel_shuffle(y / 1000.0 / 1000.0, 2)


def test_fp16_export_that_overflows_is_refused_naming_the_node(tmp_path):
    from adaptsr.adapt.models import ModelInfo

    torch.manual_seed(0)
    model = Overflowing().eval()
    model.adaptsr_info = ModelInfo(
        name="overflowing", arch="test", scale=2, in_channels=3, out_channels=3, min_size=1,
        multiple_of=1, tiling="supported", supports_half=True, supports_bfloat16=True,
    )  # fmt: skip
    out = tmp_path / "m.onnx"
    with pytest.raises(UserError, match=r"overflows in fp16 arithmetic, first at Mul"):
        export_onnx(model, out, tile=(16, 16), fp16=True)
    assert not out.exists() and not report_path(out).exists()
    report = export_onnx(model, out, tile=(16, 16))  # fp32 is fine
    assert report.parity.passed


def test_export_error_names_the_cause_the_exporter_quotes():
    from adaptsr.export.onnx import ExportSpec, _export_error

    text = (
        "Failed to decompose the FX graph for ONNX compatibility. This is step 2/3 of exporting"
        " the model to ONNX. Next steps:\n- Create an issue ...\n"
        "## Exception summary\n\n<class 'RuntimeError'>: Argument #4: Padding size should be "
        "less than the corresponding input dimension\n\n(Refer to the full stack trace above)"
    )
    line = _export_error("GRL", ExportSpec(example=(16, 16)), RuntimeError(text))
    assert line == (
        "cannot export GRL to ONNX: RuntimeError: Argument #4: Padding size should be less "
        "than the corresponding input dimension"
    )
    plain = _export_error("X", ExportSpec(example=(16, 16)), ValueError("first\nsecond"))
    assert plain == "cannot export X to ONNX: ValueError: first"


@pytest.mark.slow
def test_dynamic_batch_export_runs_tiles_batched(tmp_path):
    path = tmp_path / "edsr.onnx"
    report = export_onnx(small("EDSR", 1), path, tile=(16, 16), dynamic_batch=True)
    assert read_onnx_input(path).dims[0] == "batch" and report.spec.dynamic_batch
    assert {c.batch for c in report.parity.checks} == {2}  # traced and checked at 2
    sess = parity.session(path)
    x = photo_batch((3, 3, 16, 16))
    batched = parity.run(sess, x)
    one_by_one = np.concatenate([parity.run(sess, x[i : i + 1]) for i in range(3)])
    assert batched.shape == (3, 3, 32, 32)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert profile_shapes(read_onnx_input(path), batch=(1, 4, 8)).max == (8, 3, 16, 16)


@pytest.mark.usefixtures("one_thread")
def test_export_onnx_without_its_report_publishes_nothing(
    edsr_files, tmp_path, monkeypatch, run_cli
):
    from adaptsr.export import onnx as export_onnx

    def full(report):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export_onnx.ExportReport, "to_json", full)  # the report cannot be written
    out = tmp_path / "tiny.onnx"
    code, _, err = run_cli(
        "export", "onnx", "--model", edsr_files["ckpt"], "--out", out, "--tile", "16", "16"
    )
    one_line(code, err, "disk is full")
    assert list(tmp_path.iterdir()) == []
