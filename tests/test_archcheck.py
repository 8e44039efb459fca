"""The architecture sweep against its committed table (docs/architectures.md and .json).

Load, sites, inject, a training step and merge run for every architecture; the ONNX stages run
for ONNX_SUBSET only (export is the slow part; the full sweep is
`python -m adaptsr.export.archcheck --out docs/architectures.md`)."""

import json
from pathlib import Path

import pytest
import torch

from adaptsr.adapt.archcheck import ADAPT_STAGES, Row, install_extra
from adaptsr.export import archcheck

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "architectures.md"
ONNX_SUBSET = {"SPAN"}  # its export rewrite; BatchNorm exports: tests/test_buffers.py


def _committed() -> dict:
    return json.loads(TABLE.with_suffix(".json").read_text())


def _rows(payload: dict) -> list[Row]:
    rows = []
    for a in payload["architectures"]:
        row = Row(a["name"], a["arch"], a["package"], a["purpose"], a["scale"], a["params"])
        row.sites = a["sites"]
        row.stages = {k: (v["status"], v["reason"]) for k, v in a["stages"].items()}
        rows.append(row)
    return rows


def test_table_is_generated_from_its_json():
    payload = _committed()
    rows = _rows(payload)
    assert archcheck.counts(rows) == payload["counts"]
    meta = {k: payload[k] for k in ("date", "versions")}
    assert TABLE.read_text() == archcheck.markdown(rows, payload["counts"], meta)


@pytest.mark.slow
def test_sweep_matches_the_committed_table():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = archcheck.run(onnx_for=ONNX_SUBSET)
    finally:
        torch.set_num_threads(previous)
    committed = {a["name"]: a for a in _committed()["architectures"]}
    if install_extra() is None:  # the dev extra installs it; without it those rows are absent
        committed = {k: a for k, a in committed.items() if a["package"] == "spandrel"}
    assert {r.name for r in rows} == set(committed), "architectures added or gone: rerun the sweep"
    changed = []
    for row in rows:
        stages = ADAPT_STAGES + (archcheck.ONNX_STAGES if row.name in ONNX_SUBSET else ())
        for stage in stages:
            want = committed[row.name]["stages"][stage]["status"]
            got, why = row.stages[stage]
            if got != want:
                changed.append(f"{row.name} {stage}: {want} -> {got} {why}")
    assert not changed, "; ".join(changed)
