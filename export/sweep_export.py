"""The architecture sweep with its export stages, and the command that writes the table:

    python -m adaptsr.export.sweep_export [--out docs/architectures.md] [--arch NAME ...]

Every architecture spandrel registers (and spandrel_extra_arches, when installed) is built small
and run through load -> sites -> inject (rank 2, random non-zero adapters) -> one training step
-> merge (adaptsr.adapt.sweep), then the merged model is exported to ONNX at a static tile
and with dynamic height/width, each checked against PyTorch in ONNX Runtime (<= 1e-4). The table
goes to docs/architectures.md with a JSON of the same results beside it; the test suite reruns
the sweep and compares.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import date
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from torch import nn

from adaptsr.adapt.sweep import ADAPT_STAGES, FAIL, NA, PASS, Row, example_size, reason, sweep
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import atomic_output
from adaptsr.export.onnx import export_onnx

ONNX_STAGES = ("onnx_static", "onnx_dynamic")
STAGES = (*ADAPT_STAGES, *ONNX_STAGES)
SR = "SR"


def onnx_stages(model: nn.Module, row: Row, side: int = 16) -> None:
    """Static-tile and dynamic H/W exports of a merged model, each with ORT parity."""
    side = example_size(model, side)
    with tempfile.TemporaryDirectory(prefix="adaptsr-sweep-onnx-") as tmp:
        for stage, kw in (("onnx_static", {"tile": (side, side)}), ("onnx_dynamic", {})):
            try:
                export_onnx(model, Path(tmp) / f"{stage}.onnx", dynamic=not kw, **kw)
                row.stages[stage] = (PASS, "")
            except Exception as e:
                row.stages[stage] = (FAIL, reason(e))


def run(names: list[str] | None = None, onnx_for: set[str] | None = None, progress=None) -> list:
    rows = sweep(names, onnx_stages, onnx_for, progress)
    for row in rows:
        for stage in ONNX_STAGES:
            if stage not in row.stages:
                if row.stages.get("merge", (NA,))[0] != PASS:
                    row.stages[stage] = (NA, "needs a merged model")
                else:
                    row.stages[stage] = (NA, "not run")
    return rows


def counts(rows: list[Row]) -> dict:
    sr = [r for r in rows if r.purpose == SR]

    def passing(group, stages):
        return sum(all(r.stages[s][0] == PASS for s in stages) for r in group)

    return {
        "architectures": len(rows),
        "sr": len(sr),
        "sr_adapt_merge": passing(sr, ADAPT_STAGES),
        "sr_adapt_merge_export": passing(sr, (*ADAPT_STAGES, "onnx_static")),
        "sr_export_run": sum(r.stages["onnx_static"][0] != NA for r in sr),
        "sr_dynamic": passing(sr, (*ADAPT_STAGES, *ONNX_STAGES)),
        "other": len(rows) - len(sr),
        "other_adapt_merge": passing([r for r in rows if r.purpose != SR], ADAPT_STAGES),
    }


def versions() -> dict:
    out = {}
    for name in ("spandrel", "spandrel_extra_arches", "torch", "onnxruntime"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _cell(status: str, why: str) -> str:
    if status == PASS:
        return PASS
    return f"{status}: {why}".replace("|", "\\|") if why else status


def headline(c: dict) -> str:
    """The counts line (README quotes it)."""
    if c["sr_export_run"] == c["sr_adapt_merge"]:
        text = (
            f"**{c['sr_adapt_merge_export']} of {c['sr']} SR architectures adapt, merge and "
            f"export** (ONNX at a static tile); {c['sr_adapt_merge']} of {c['sr']} adapt and "
            f"merge; {c['sr_dynamic']} of {c['sr']} also export with dynamic height/width."
        )
    else:
        text = (
            f"**{c['sr_adapt_merge']} of {c['sr']} SR architectures adapt and merge**; of the "
            f"{c['sr_export_run']} whose export was run, {c['sr_adapt_merge_export']} export to "
            f"ONNX at a static tile and {c['sr_dynamic']} with dynamic height/width."
        )
    return (
        f"{text} {c['other_adapt_merge']} of {c['other']} other architectures (restoration, "
        "face, inpainting, colourisation) adapt and merge."
    )


def _coverage_note(rows: list[Row]) -> list[str]:
    merged = [r for r in rows if r.stages["merge"][0] == PASS]
    exported = [r for r in merged if r.stages["onnx_static"][0] != NA]
    if len(exported) == len(merged):
        return []
    return [
        f"The export stages ran for {len(exported)} of the {len(merged)} architectures that "
        "merge (the others say `n/a: not run`): on a shared 2-core CPU the whole export sweep "
        "takes longer than one run allowed; `--arch NAME --update` runs them for one "
        "architecture and updates its row.",
        "",
    ]


def markdown(rows: list[Row], c: dict, meta: dict) -> str:
    lines = [
        "# Architectures",
        "",
        headline(c),
        "",
        "Generated by `python -m adaptsr.export.sweep_export --out docs/architectures.md` "
        "(single rows rerun with `--arch NAME --update`) "
        f"({meta['date']}, 2-core CPU; spandrel {meta['versions']['spandrel']}, "
        f"spandrel_extra_arches {meta['versions']['spandrel_extra_arches']}, torch "
        f"{meta['versions']['torch']}); the results are also in "
        "[architectures.json](architectures.json), and `tests/test_sweep.py` reruns the "
        "sweep and fails on any change.",
        "",
        "Each architecture is built from its own constructor with small settings "
        "(the architecture profiles in `adapt/archs/`), saved as a state dict and loaded with "
        "`load_model`; then rank-2 adapters on every site with random non-zero values, one "
        "Adam step on the CPU (finite loss, gradients on adapters only, base weights and "
        "buffers bit-identical afterwards), `merge_lora` (merged vs adapted output <= 1e-5 "
        "relative; the merged state dict has exactly the base keys, shapes and dtypes and "
        "reloads through spandrel), and the merged model exported to ONNX at a static tile "
        "and with dynamic height/width, each within 1e-4 of PyTorch in ONNX Runtime.",
        "",
        *_coverage_note(rows),
        "| architecture | purpose | scale | sites by kind | " + " | ".join(STAGES) + " |",
        "|---" * (4 + len(STAGES)) + "|",
    ]
    for r in rows:
        sites = ", ".join(f"{k} {v}" for k, v in sorted(r.sites.items())) or "-"
        cells = [_cell(*r.stages[s]) for s in STAGES]
        scale = f"x{r.scale}" if r.scale else "-"
        lines.append(f"| {r.name} | {r.purpose or '-'} | {scale} | {sites} | " + " | ".join(cells)
                     + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def rows_from_json(payload: dict) -> list[Row]:
    """The rows of a written architectures.json."""
    rows = []
    for a in payload["architectures"]:
        row = Row(a["name"], a["arch"], a["package"], a["purpose"], a["scale"], a["params"])
        row.sites = a["sites"]
        row.stages = {k: (v["status"], v["reason"]) for k, v in a["stages"].items()}
        row.seconds = a.get("seconds", 0.0)
        rows.append(row)
    return rows


def updated(previous: list[Row], fresh: list[Row]) -> list[Row]:
    """The previous table with the freshly swept rows in place of theirs (new ones at the end)."""
    by_name = {r.name: r for r in fresh}
    rows = [by_name.pop(r.name, r) for r in previous]
    return rows + list(by_name.values())


def write(rows: list[Row], out: Path, force: bool = True) -> dict:
    c = counts(rows)
    meta = {"date": date.today().isoformat(), "versions": versions()}
    payload = {**meta, "counts": c, "architectures": [r.to_dict() for r in rows]}
    with atomic_output(out, force=force) as tmp:
        tmp.write_text(markdown(rows, c, meta))
    with atomic_output(out.with_suffix(".json"), force=force) as tmp:
        tmp.write_text(json.dumps(payload, indent=1) + "\n")
    return payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adaptsr.export.sweep_export")
    parser.add_argument("--out", type=Path, help="write the table here (and .json beside it)")
    parser.add_argument("--arch", action="append", help="only this architecture (repeatable)")
    parser.add_argument("--no-onnx", action="store_true", help="skip the export stages")
    parser.add_argument(
        "--update",
        action="store_true",
        help="rerun only the --arch rows and keep the other rows of the table in --out",
    )
    args = parser.parse_args(argv)
    if args.out is not None and args.out.suffix != ".md":
        print(f"error: {args.out}: choose a .md file name", file=sys.stderr)
        return 2
    if args.update and (args.out is None or not args.arch):
        print("error: --update needs --out and at least one --arch", file=sys.stderr)
        return 2
    previous: list[Row] = []
    if args.update:
        try:
            previous = rows_from_json(json.loads(args.out.with_suffix(".json").read_text()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"error: cannot read the table to update: {e}", file=sys.stderr)
            return 1
    rows = run(args.arch, set() if args.no_onnx else None, lambda s: print(s, flush=True))
    if args.out is not None:
        try:
            payload = write(updated(previous, rows), args.out)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(json.dumps(payload["counts"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
