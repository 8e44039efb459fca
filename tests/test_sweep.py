"""The architecture sweep against its committed table (docs/architectures.md and .json).

Load, sites, inject, a training step and merge run for every architecture; the ONNX stages run
for ONNX_SUBSET only (export is the slow part; the full sweep is
`python -m adaptsr.export.sweep_export --out docs/architectures.md`)."""

import json
from pathlib import Path

import pytest
import torch

from adaptsr.adapt.sweep import ADAPT_STAGES, install_extra
from adaptsr.export import sweep_export

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "architectures.md"
# Each has an export rewrite or translation of its own (SPAN: fused conv, SeemoRe: dense
# experts, ATD: aten.sort); BatchNorm exports: tests/test_buffers.py.
ONNX_SUBSET = {"SPAN", "SeemoRe", "ATD"}


def _committed() -> dict:
    return json.loads(TABLE.with_suffix(".json").read_text())


def test_table_is_generated_from_its_json():
    payload = _committed()
    rows = sweep_export.rows_from_json(payload)
    assert sweep_export.counts(rows) == payload["counts"]
    meta = {k: payload[k] for k in ("date", "versions")}
    assert TABLE.read_text() == sweep_export.markdown(rows, payload["counts"], meta)


def test_update_replaces_only_the_swept_rows():
    previous = sweep_export.rows_from_json(_committed())
    fresh = sweep_export.rows_from_json(_committed())[:2]
    fresh[0].stages["merge"] = ("FAIL", "changed")
    fresh[1].name = "NewArch"
    rows = sweep_export.updated(previous, fresh)
    assert [r.name for r in rows] == [r.name for r in previous] + ["NewArch"]
    assert rows[0].stages["merge"] == ("FAIL", "changed")
    assert [r.to_dict() for r in rows[1:-1]] == [r.to_dict() for r in previous[1:]]


@pytest.mark.slow
def test_sweep_matches_the_committed_table():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = sweep_export.run(onnx_for=ONNX_SUBSET)
    finally:
        torch.set_num_threads(previous)
    committed = {a["name"]: a for a in _committed()["architectures"]}
    if install_extra() is None:  # the dev extra installs it; without it those rows are absent
        committed = {k: a for k, a in committed.items() if a["package"] == "spandrel"}
    assert {r.name for r in rows} == set(committed), "architectures added or gone: rerun the sweep"
    changed = []
    for row in rows:
        stages = ADAPT_STAGES + (sweep_export.ONNX_STAGES if row.name in ONNX_SUBSET else ())
        for stage in stages:
            want = committed[row.name]["stages"][stage]["status"]
            got, why = row.stages[stage]
            if got != want:
                changed.append(f"{row.name} {stage}: {want} -> {got} {why}")
    assert not changed, "; ".join(changed)
