"""Hostile files around model cards: a card beside a merged checkpoint that is damaged, nested
thousands deep or holds NaN, and a run folder whose config.json or log.jsonl is odd. The merge
or export goes on (the card then says less), never an internal error, and every card written
is strict JSON."""

import json

import pytest
from fakes.models import one_block_edsr
from test_hostile_merge import write_adapter

from adaptsr.adapt.models import save_model


def strict(path):
    """The card as a strict JSON reader reads it (no NaN or Infinity)."""

    def refuse(constant):
        raise ValueError(f"{path} holds {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cards")
    base = folder / "edsr.pth"
    save_model(one_block_edsr(), base)
    run = folder / "run"
    run.mkdir()
    adapter = write_adapter(base, run / "adapter.safetensors", 1)
    return base, adapter


def merge(run_cli, base, adapter, out):
    code, _, err = run_cli("merge", "--model", base, "--adapter", adapter, "--out", out, "--force")
    assert code == 0, err
    return strict(out.parent / f"{out.name}.modelcard.json")


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text.replace('"weight": 1.0', '"weight": NaN'),
        lambda text: text.replace('"weight": 1.0', '"weight": 1e999'),
        lambda text: "[" * 100000,
        lambda text: "{broken",
    ],
)
def test_an_export_beside_a_damaged_card_writes_a_strict_card(merged, tmp_path, run_cli, damage):
    base, adapter = merged
    checkpoint = tmp_path / "m.pth"
    merge(run_cli, base, adapter, checkpoint)
    card = tmp_path / "m.pth.modelcard.json"
    damaged = damage(card.read_text())
    assert damaged != card.read_text()
    card.write_text(damaged)
    out = tmp_path / "m.onnx"
    code, _, err = run_cli("export", "onnx", "--model", checkpoint, "--out", out, "--tile", 8, 8)
    assert code == 0, err
    assert strict(tmp_path / "m.onnx.modelcard.json")["adaptsr"]["adapters"] == []


@pytest.mark.parametrize(
    "config, log",
    [
        ('{"data": 5, "batch": 2}', ""),
        ('{"data": "abc", "hr_dir": 5}', ""),
        ("[1]", ""),
        ('{"data": ["photos"]}', "[" * 100000 + "\n" + '{"event": "done", "iter": 7}'),
    ],
)
def test_an_odd_run_folder_says_less_in_the_card(merged, tmp_path, run_cli, config, log):
    base, adapter = merged
    (adapter.parent / "config.json").write_text(config)
    (adapter.parent / "log.jsonl").write_text(log)
    card = merge(run_cli, base, adapter, tmp_path / "m.pth")
    assert card.get("dataset") in (None, "photos")
    assert card.get("trainingIterations") in (None, 7)
