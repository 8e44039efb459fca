"""A checkpoint `adapt merge` writes loads in plain spandrel, with the same output as in adaptsr:
for every architecture spandrel registers that adapts (each built from its profile's small
configuration, adapt/archs/), in a separate Python that imports spandrel and not adaptsr (as a
chaiNNer or spandrel user would load it). EDSR is adaptsr's own registration, not spandrel's:
docs/ecosystem.md says how such a file reaches other tools (ONNX)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from adaptsr.adapt.adapter_file import save_adapter
from adaptsr.adapt.archs import PROFILES
from adaptsr.adapt.lora import inject_lora
from adaptsr.adapt.merge_adapter import merge_adapter_files
from adaptsr.adapt.models import load_model, model_info
from adaptsr.adapt.sweep import example_size, install_extra, randomise_adapters, row_name

# the architectures spandrel (and spandrel_extra_arches, when installed) loads
CASES = [
    (profile, config)
    for profile in PROFILES.values()
    if profile.package != "adaptsr"
    for config in profile.small
]
TOLERANCE = 1e-5  # fp32, on [0, 1]: the same weights through the same code, on the same CPU

# Run in a fresh Python: load every file with spandrel's ModelLoader and call the descriptor
# (spandrel's own call function), write the outputs; no adaptsr import anywhere.
PLAIN_SPANDREL = """
import json, sys
import numpy as np, torch, spandrel
jobs = json.load(open(sys.argv[1]))
if any(job["extra"] for job in jobs):
    import spandrel_extra_arches
    spandrel_extra_arches.install()
torch.set_num_threads(1)
for job in jobs:
    model = spandrel.ModelLoader().load_from_file(job["merged"]).eval()
    with torch.no_grad():
        y = model(torch.from_numpy(np.load(job["input"])))
    np.save(job["output"], y.numpy())
    job["arch"] = model.architecture.id
json.dump(jobs, open(sys.argv[1], "w"))
assert not [m for m in sys.modules if m.startswith("adaptsr")]
"""


def _merged(profile, config, folder):
    """Build small, save, adapt with random non-zero adapters, `adapt merge`: the merged file,
    an input and the merged model's output in adaptsr."""
    folder.mkdir()
    torch.manual_seed(0)
    net = profile.construct(config.cls, **config.kwargs)
    base = folder / "base.pth"
    torch.save(net.state_dict(), base)
    adapted = inject_lora(load_model(base), 2)
    randomise_adapters(adapted)
    adapter = save_adapter(adapted, folder / "adapter.safetensors")
    merged = folder / "merged.safetensors"
    merge_adapter_files(str(base), [(str(adapter), 1.0)], str(merged))
    model = load_model(merged)
    info, side = model_info(model), example_size(model, config.side)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, info.in_channels, side, side, generator=g)
    with torch.no_grad():
        expected = model(x.clone()).numpy()  # some models scale their input in place
    np.save(folder / "x.npy", x.numpy())
    return {
        "name": row_name(profile.id, config),
        "arch": profile.id,
        "extra": profile.package == "spandrel_extra_arches",
        "merged": str(merged),
        "input": str(folder / "x.npy"),
        "output": str(folder / "y.npy"),
    }, expected


@pytest.fixture(scope="module")
def reloaded(tmp_path_factory):
    """name -> (the merged model's output in adaptsr, in plain spandrel, spandrel's arch id)."""
    extra = install_extra() is not None
    root = tmp_path_factory.mktemp("reload")
    jobs, expected = [], {}
    for i, (profile, config) in enumerate(CASES):
        if profile.package == "spandrel_extra_arches" and not extra:
            continue
        job, out = _merged(profile, config, root / str(i))
        jobs.append(job)
        expected[job["name"]] = out
    (root / "jobs.json").write_text(json.dumps(jobs))
    script = [sys.executable, "-c", PLAIN_SPANDREL, str(root / "jobs.json")]
    done = subprocess.run(script, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return {
        job["name"]: (expected[job["name"]], np.load(job["output"]), job["arch"])
        for job in json.loads((root / "jobs.json").read_text())
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [row_name(p.id, c) for p, c in CASES], ids=[row_name(p.id, c) for p, c in CASES]
)
def test_a_merged_checkpoint_loads_in_plain_spandrel_with_the_same_output(reloaded, name):
    if name not in reloaded:
        pytest.skip("spandrel_extra_arches is not installed")
    ours, theirs, arch = reloaded[name]
    assert arch == name.split(" ")[0]
    assert theirs.shape == ours.shape and theirs.dtype == np.float32
    # spandrel's descriptor clamps its output to [0, 1]; enough of it lies inside to compare
    inside = (ours > 0) & (ours < 1)
    assert inside.mean() > 0.05
    assert float(np.abs(theirs - np.clip(ours, 0, 1)).max()) <= TOLERANCE


def test_every_architecture_that_adapts_is_covered():
    """EDSR is the one profile spandrel does not load (adaptsr registers it)."""
    covered = {p.id for p, _ in CASES}
    adapting = {p.id for p in PROFILES.values() if p.small}
    assert adapting - covered == {"EDSR"}
