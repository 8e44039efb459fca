"""Model cards: `adapt merge` writes one beside the merged checkpoint, in OpenModelDB's model
file shape (the rules below are OpenModelDB's documented field rules, written out here), with
the adapters, ranks and degradation under the `adaptsr` key."""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from fakes.models import one_block_edsr
from fakes.openmodeldb import ARCH_ID, check_openmodeldb_shape

from adaptsr.adapt import model_card, models
from adaptsr.adapt.archs import PROFILES, build_small
from adaptsr.adapt.lora import inject_lora, save_adapter
from adaptsr.adapt.merge_adapter import merge_adapter_files
from adaptsr.adapt.models import load_model, model_from_state_dict, save_model
from adaptsr.core.artifacts import model_card_path
from adaptsr.core.errors import UserError


def _adapter(path, seed=1, degradation=""):
    adapted = inject_lora(one_block_edsr(), 2)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.01)
    return str(save_adapter(adapted, path, degradation=degradation))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny EDSR base and an adapter in a run folder with its config.json and log.jsonl."""
    root = tmp_path_factory.mktemp("card")
    base = str(save_model(one_block_edsr(), root / "base.safetensors"))
    folder = root / "run"
    folder.mkdir()
    adapter = _adapter(folder / "adapter.safetensors", degradation="realesrgan")
    config = {"model": base, "data": ["/photos/holiday", "/photos/garden"], "iters": 300}
    (folder / "config.json").write_text(json.dumps({**config, "batch": 4, "patch": 96}))
    log = [
        {"event": "start", "iter": 0},
        {"event": "val", "iter": 100, "psnr_y": 30.0, "best": True},
        {"event": "val", "iter": 200, "psnr_y": 29.0, "best": False},
        {"event": "done", "iter": 300},
    ]
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    return root, base, adapter


def test_merge_writes_an_openmodeldb_card_beside_the_checkpoint(run, tmp_path):
    root, base, adapter = run
    out = tmp_path / "edsr-photos.safetensors"
    summary = merge_adapter_files(base, [(adapter, 1.0)], str(out))
    assert summary.text().endswith(f"\nmodel card: {model_card_path(out)}")
    card = json.loads(model_card_path(out).read_text())
    check_openmodeldb_shape(card)
    assert model_card_path(out).name == "edsr-photos.safetensors.modelcard.json"
    assert card["name"] == "edsr-photos"
    assert (card["architecture"], card["scale"]) == ("edsr", 2)
    assert (card["inputChannels"], card["outputChannels"]) == (3, 3)
    assert card["size"] == ["1nb", "8nf"]  # spandrel's size tags of one block of 8 features
    data = out.read_bytes()
    assert card["resources"] == [
        {
            "platform": "pytorch",
            "type": "safetensors",
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "urls": [],
        }
    ]
    # the run's facts: the iteration the adapter holds (the end), batch, HR crop, data folders
    assert card["trainingIterations"] == 300
    assert (card["trainingBatchSize"], card["trainingHRSize"]) == (4, 96)
    assert card["dataset"] == "holiday, garden"
    assert card["pretrainedModelG"] == "base.safetensors"  # a file: its name, not its path
    assert card["tags"] == ["restoration"]  # trained on synthetic degradations
    assert "author" not in card and "license" not in card  # unknown: left out
    facts = card["adaptsr"]
    assert (facts["base"], facts["base_weights"]) == ("base.safetensors", "file")
    (used,) = facts["adapters"]
    assert used["file"] == "adapter.safetensors" and used["weight"] == 1.0
    assert used["sha256"] == hashlib.sha256(Path(adapter).read_bytes()).hexdigest()
    assert (used["mode"], used["sites"], used["degradation"]) == ("lora", 6, "realesrgan")
    assert used["ranks"] == {"min": 2, "max": 2, "mean": 2.0, "total": 12, "alpha": 1.0}
    assert "onnx" not in facts


def test_a_blend_records_each_adapter_and_its_weight(run, tmp_path):
    root, base, adapter = run
    other = _adapter(tmp_path / "b.safetensors", seed=2)
    out = tmp_path / "blend.pth"
    merge_adapter_files(base, [(adapter, 0.7), (other, 0.3)], str(out))
    card = json.loads(model_card_path(out).read_text())
    check_openmodeldb_shape(card)
    assert card["resources"][0]["type"] == "pth"
    assert [(a["file"], a["weight"]) for a in card["adaptsr"]["adapters"]] == [
        ("adapter.safetensors", 0.7),
        ("b.safetensors", 0.3),
    ]
    assert "trainingIterations" not in card  # two runs: no one run's facts
    assert (
        "with 0.7 x adapter.safetensors (lora, 6 sites, rank 2-2) + 0.3 x b.safetensors"
        in (card["description"])
    )


def test_an_existing_card_is_replaced_only_with_force(run, tmp_path):
    root, base, adapter = run
    out = tmp_path / "m.safetensors"
    model_card_path(out).write_text("mine\n")
    with pytest.raises(UserError, match="m.safetensors.modelcard.json"):
        merge_adapter_files(base, [(adapter, 1.0)], str(out))
    assert not out.exists()  # refused before any work
    assert model_card_path(out).read_text() == "mine\n"
    merge_adapter_files(base, [(adapter, 1.0)], str(out), force=True)
    assert json.loads(model_card_path(out).read_text())["name"] == "m"


def test_adapter_best_holds_the_iteration_of_the_last_best_validation(run, tmp_path):
    root, base, adapter = run
    best = root / "run" / "adapter-best.safetensors"
    best.write_bytes(Path(adapter).read_bytes())
    assert model_card.Training.of_adapter(best).iterations == 100
    assert model_card.Training.of_adapter(adapter).iterations == 300
    # outside its run folder an adapter has no training facts
    assert model_card.Training.of_adapter(tmp_path / "adapter.safetensors") == (
        model_card.Training()
    )


def test_an_unfinished_run_records_no_iterations(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"batch": 2, "patch": 64, "data": []}))
    (tmp_path / "log.jsonl").write_text('{"event": "start", "iter": 0}\nnot json\n')
    facts = model_card.Training.of_adapter(tmp_path / "adapter.safetensors")
    assert facts == model_card.Training(None, 2, 64, None)


def test_the_base_is_named_by_what_its_weights_are(monkeypatch, tmp_path):
    assert model_card.base_facts("swinir-m-x4")[0] == "random"  # not fetched: no pretrained model
    assert model_card.base_facts("safmn-x4") == ("random", None, None)
    assert model_card.base_facts("adaptsr-safmn-x4") == ("pretrained", "adaptsr-safmn-x4", None)
    assert model_card.base_facts(str(tmp_path / "x.pth")) == ("file", "x.pth", None)
    monkeypatch.setattr(models, "cached_path", lambda name: tmp_path / "weights.pth")
    assert model_card.base_facts("swinir-m-x4") == (
        "official",
        "4x-classicalSR-DIV2K-s64w8-SwinIR-M",  # its OpenModelDB id
        "Apache-2.0",
    )


def test_the_architecture_map_names_openmodeldb_ids_of_known_architectures():
    for arch, omdb in model_card.OPENMODELDB_ARCHITECTURES.items():
        assert arch in PROFILES, arch
        assert ARCH_ID.match(omdb), omdb
    names = {}
    for variant in ("", "RealPLKSR"):
        net = build_small("PLKSR", variant=variant)
        model = model_from_state_dict(net.state_dict())
        names[variant] = model_card.openmodeldb_architecture(model)
    assert names == {"": "plksr", "RealPLKSR": "realplksr"}
    net = build_small("SAFMN")  # not listed by OpenModelDB yet: spandrel's id in lower case
    assert model_card.openmodeldb_architecture(model_from_state_dict(net.state_dict())) == "safmn"


def test_resource_types_follow_the_file_name(tmp_path):
    f = tmp_path / "partial.tmp"
    f.write_bytes(b"x" * 10)
    r = model_card.Resource.of_file(f, named=tmp_path / "m.onnx")
    assert (r.platform, r.type, r.size) == ("onnx", "onnx", 10)
    assert r.sha256 == hashlib.sha256(b"x" * 10).hexdigest()
    with pytest.raises(UserError, match="m.bin"):
        model_card.Resource.of_file(f, named="m.bin")


def test_size_tags_are_spandrels_and_none_for_a_model_it_does_not_know():
    net = build_small("ESRGAN")
    assert model_card.size_tags(net) == ("8nf", "1nb")
    assert model_card.size_tags(torch.nn.Conv2d(3, 12, 3)) == ()


def test_an_export_of_a_merged_checkpoint_keeps_where_its_weights_came_from(run, tmp_path):
    root, base, adapter = run
    out = tmp_path / "m.safetensors"
    merge_adapter_files(base, [(adapter, 1.0)], str(out))
    merged = json.loads(model_card_path(out).read_text())
    resource = model_card.Resource.of_file(out)
    card = model_card.make_card(load_model(out), str(out), [], resource, "again").to_json()
    kept = ("trainingIterations", "trainingBatchSize", "trainingHRSize", "dataset")
    kept += ("pretrainedModelG", "tags", "description")
    assert {k: card[k] for k in kept} == {k: merged[k] for k in kept}
    assert card["adaptsr"] == merged["adaptsr"]  # base, its weights, the adapters
    # a card that no longer describes the file (another file under its name) is not read
    out.write_bytes(out.read_bytes() + b"\n")
    assert model_card.Provenance.beside(out) is None
    card = model_card.make_card(load_model(base), str(out), [], resource, "again").to_json()
    assert card["adaptsr"]["adapters"] == [] and card["pretrainedModelG"] == "m.safetensors"


def test_a_merged_checkpoint_and_its_onnx_in_one_folder_keep_a_card_each(run, tmp_path, run_cli):
    root, base, adapter = run
    merged, onnx = tmp_path / "m.safetensors", tmp_path / "m.onnx"
    code, _, err = run_cli("merge", "--model", base, "--adapter", adapter, "--out", merged)
    assert code == 0, err
    code, _, err = run_cli("export", "onnx", "--model", merged, "--out", onnx, "--tile", 16, 16)
    assert code == 0, err  # no --force: the export's card is its own file
    checkpoint_card = json.loads(model_card_path(merged).read_text())
    onnx_card = json.loads(model_card_path(onnx).read_text())
    assert [r["type"] for r in checkpoint_card["resources"]] == ["safetensors"]
    assert [r["type"] for r in onnx_card["resources"]] == ["onnx"]
    assert sorted(p.name for p in tmp_path.iterdir() if "modelcard" in p.name) == [
        "m.onnx.modelcard.json",
        "m.safetensors.modelcard.json",
    ]
