"""What an evaluation produced and how it is written: the per-image scores (`Result`), the
table, the CSV, the JSON report and the side-by-side comparison PNG."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from adaptsr.core.errors import UserError
from adaptsr.core.fileio import atomic_output

# table headings of the metrics (perceptual ones: adaptsr.adapt.metrics)
METRIC_LABELS = {"psnr_y": "PSNR-Y", "ssim_y": "SSIM-Y", "lpips": "LPIPS", "dists": "DISTS"}
METRIC_LABELS.update(haarpsi="HaarPSI", ms_gmsd="MS-GMSD")
COMPARE_ROWS = 4  # images shown in the side-by-side PNG
COMPARE_CROP = 96  # HR pixels per crop side


@dataclass
class Result:
    methods: list[str]  # row order of the table; the last one is the evaluated model
    rows: list[dict] = field(default_factory=list)  # per image: name, <method>_<metric>
    skipped: list[dict] = field(default_factory=list)  # name, reason
    notes: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)  # settings echoed into the report
    compare: list[tuple[str, list[np.ndarray]]] = field(default_factory=list)
    scale: int | None = None

    def headline(self) -> str:
        return f"{len(self.rows)} image(s), x{self.scale}, border {self.scale} px cropped"

    def skipped_note(self) -> str | None:
        """One line about the images left out, or None."""
        if not self.skipped:
            return None
        first = self.skipped[0]["reason"]
        return f"skipped {len(self.skipped)} image(s), e.g. {first} (--strict makes that fatal)"

    @property
    def primary(self) -> str:
        return self.methods[-1]

    def metric_names(self) -> list[str]:
        names = []
        for row in self.rows:
            for key in row:
                if key.startswith(self.primary + "_"):
                    name = key[len(self.primary) + 1 :]
                    if name not in names:
                        names.append(name)
        return names

    def means(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for method in self.methods:
            out[method] = {}
            for metric in self.metric_names():
                values = [r[f"{method}_{metric}"] for r in self.rows if f"{method}_{metric}" in r]
                if values:
                    out[method][metric] = float(np.mean(values))
        return out

    def report(self) -> dict:
        means = self.means()
        images = []
        for row in self.rows:
            item = {"name": row["name"]}
            item.update({m: row[f"{self.primary}_{m}"] for m in self.metric_names()})
            item.update({k: v for k, v in row.items() if k != "name" and not self._primary(k)})
            images.append(item)
        return {
            **self.info,
            "count": len(self.rows),
            "mean": means.get(self.primary, {}),
            "baselines": {m: means[m] for m in self.methods[:-1]},
            "images": images,
            "skipped": self.skipped,
            "notes": self.notes,
        }

    def _primary(self, key: str) -> bool:
        return key.startswith(self.primary + "_")

    def csv_text(self) -> str:
        keys = ["name"] + [f"{m}_{k}" for m in self.methods for k in self.metric_names()]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(keys)
        for row in self.rows:
            writer.writerow([_fmt(row.get(k, "")) for k in keys])
        return buf.getvalue()

    def table(self) -> str:
        names = self.metric_names()
        heads = METRIC_LABELS
        width = max(8, *(len(m) for m in self.methods))
        lines = [f"{'':<{width}}" + "".join(f"{heads.get(n, n):>10}" for n in names)]
        for method, values in self.means().items():
            cells = "".join(f"{_fmt(values[n]) if n in values else '-':>10}" for n in names)
            lines.append(f"{method:<{width}}{cells}")
        return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.4f}"
    return str(v)


def crops(images: list[np.ndarray]) -> list[np.ndarray]:
    """The same window of every image, where the HR (last) image has the most texture."""
    hr = images[-1]
    h, w = hr.shape[:2]
    c = min(COMPARE_CROP, h, w)
    gray = hr.mean(axis=2)
    best, where = -1.0, (0, 0)
    step = max(1, c // 2)
    for y in range(0, h - c + 1, step):
        for x in range(0, w - c + 1, step):
            v = float(gray[y : y + c, x : x + c].var())
            if v > best:
                best, where = v, (y, x)
    y, x = where
    return [img[y : y + c, x : x + c] for img in images]


def compare_image(rows: list[tuple[str, list[np.ndarray]]], labels: list[str]) -> np.ndarray:
    """One PNG-ready RGB uint8 grid: a labelled column per method, a row per image."""
    c = max(crop.shape[0] for _, crops in rows for crop in crops)
    zoom = max(1, 192 // c)
    side, gap, head = c * zoom, 4, 22
    n = len(labels)
    grid = np.full((head + len(rows) * (side + gap), n * (side + gap) - gap, 3), 255, np.uint8)
    for j, label in enumerate(labels):
        cv2.putText(
            grid, label, (j * (side + gap) + 4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1
        )
    for i, (_, crops) in enumerate(rows):
        top = head + i * (side + gap)
        for j, crop in enumerate(crops):
            tile = np.repeat(np.repeat(crop, zoom, axis=0), zoom, axis=1)
            tile = (np.clip(tile, 0, 1) * 255 + 0.5).astype(np.uint8)
            left = j * (side + gap)
            grid[top : top + tile.shape[0], left : left + tile.shape[1]] = tile
    return grid


def compare_labels(result: Result) -> list[str]:
    has_base = "base" in result.methods
    return ["bicubic", *(["base", "adapted"] if has_base else ["model"]), "HR"]


# ---------------------------------------------------------------------------------------------
# writing


def write_text(path: Path, text: str, force: bool) -> None:
    with atomic_output(path, force=force) as tmp:
        tmp.write_text(text)


def write_report(result: Result, path: Path, force: bool) -> None:
    def clean(v):  # JSON has no inf
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    write_text(path, json.dumps(clean(result.report()), indent=2) + "\n", force)


def write_compare(result: Result, path: Path, force: bool) -> None:
    grid = compare_image(result.compare, compare_labels(result))
    ok, buf = cv2.imencode(".png", grid[:, :, ::-1])
    if not ok:
        raise UserError(f"cannot encode {path}")
    with atomic_output(path, force=force) as tmp:
        tmp.write_bytes(buf.tobytes())
