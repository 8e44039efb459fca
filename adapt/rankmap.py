"""Rank map files: the one schema (format adaptsr-rank-map-1) that `adapt allocate`,
`adapt train --rank-aware` and a run's copy of a `--rank-map` all write and read through
`RankAllocation`, and its pictures (the rank heatmap) and summary table.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from adaptsr.core.errors import UserError
from adaptsr.core.fileio import atomic_output, check_readable, check_writable, parse_json
from adaptsr.core.lazy import lazy_import

# plotting: only for the heatmap
matplotlib_agg = lazy_import("matplotlib.backends.backend_agg")
matplotlib_figure = lazy_import("matplotlib.figure")

if TYPE_CHECKING:  # reading a rank map needs no torch
    from adaptsr.adapt.lora import Site

RANK_MAP_FORMAT = "adaptsr-rank-map-1"
COLUMNS = ("conv", "q", "k", "v", "o", "fc1", "fc2", "mlp", "linear")  # heatmap columns


@dataclass(frozen=True)
class SiteInfo:
    """What a rank map file records of a site: enough for the heatmap and the summary."""

    name: str
    kind: str
    module: str
    cost_per_rank: int
    max_rank: int

    @classmethod
    def of(cls, site: Site) -> SiteInfo:
        return cls(site.name, site.kind, site.module, site.cost_per_rank, site.max_rank)


@dataclass
class RankAllocation:
    """A rank map with what produced it: the only writer (`to_dict`) and reader (`from_dict`,
    `read`) of rank map files, for `adapt allocate` and `adapt train` alike.

    A hand-written map holds only `ranks`; the other fields are then empty (None, {} or []).
    """

    ranks: dict[str, int]  # 0 = no adapter; `adapt allocate` lists every site
    scores: dict[str, float] = field(default_factory=dict)
    budget: int | None = None
    budget_spec: str | None = None
    used: int | None = None
    base_params: int | None = None
    sites: list[SiteInfo] = field(default_factory=list)
    rho: float | None = None
    settings: dict = field(default_factory=dict)
    source: str | None = None  # the file a run's copy was made from (`adapt train --rank-map`)
    warnings: list[str] = field(default_factory=list)  # for the terminal, not written
    targets: str = "all"  # the site families allocated over (adaptsr.adapt.sites)

    @property
    def adapted(self) -> dict[str, int]:
        """The rank map to inject: sites with rank > 0."""
        return {k: v for k, v in self.ranks.items() if v > 0}

    def to_dict(self) -> dict:
        budget = None if self.budget is None else {"params": self.budget, "spec": self.budget_spec}
        share = None
        if self.used is not None and self.budget:
            share = round(100.0 * self.used / self.budget, 4)
        return {
            "format": RANK_MAP_FORMAT,
            "ranks": dict(self.ranks),
            "scores": dict(self.scores),
            "budget": budget,
            "used_params": self.used,
            "budget_used_percent": share,
            "base_params": self.base_params,
            "spearman_rho": self.rho,
            "settings": dict(self.settings),
            "sites": {
                s.name: {
                    "kind": s.kind,
                    "module": s.module,
                    "cost_per_rank": s.cost_per_rank,
                    "max_rank": s.max_rank,
                }
                for s in self.sites
            },
            "source": self.source,
            "targets": self.targets,
        }

    @classmethod
    def from_dict(cls, data, where: str = "rank map") -> RankAllocation:
        """The allocation of a rank map file's content; `where` names it in errors."""
        ranks = data.get("ranks") if isinstance(data, dict) else None
        if not isinstance(ranks, dict) or not ranks:
            raise UserError(f"{where} has no rank map under the key 'ranks'")
        fmt = data.get("format")
        if fmt is not None and fmt != RANK_MAP_FORMAT:
            raise UserError(
                f"{where}: unknown format {fmt!r} (this version reads {RANK_MAP_FORMAT})"
            )
        for site, r in ranks.items():
            if not _whole(r):
                raise UserError(f"{where}: rank of {site} must be a whole number >= 0, got {r!r}")

        def optional(key: str, ok, empty):
            value = data.get(key)
            if value is None:
                return empty
            if not ok(value):
                raise UserError(f"{where}: {key!r} has the wrong type ({value!r:.60})")
            return value

        def number(v) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        scores = optional("scores", lambda v: _table(v, number), {})
        budget = optional("budget", _budget_fields, None)
        sites = optional("sites", lambda v: _table(v, _site_fields), {})
        return cls(
            ranks=dict(ranks),
            scores=dict(scores),
            budget=None if budget is None else budget["params"],
            budget_spec=None if budget is None else budget.get("spec"),
            used=optional("used_params", _whole, None),
            base_params=optional("base_params", _whole, None),
            sites=[SiteInfo(name, **fields) for name, fields in sites.items()],
            rho=optional("spearman_rho", number, None),
            settings=dict(optional("settings", _table, {})),
            source=optional("source", lambda v: isinstance(v, str), None),
            targets=optional("targets", lambda v: isinstance(v, str) and v, "all"),
        )

    @classmethod
    def read(cls, path: str | os.PathLike) -> RankAllocation:
        """A rank map JSON file, as written by write_rank_map or by hand."""
        path = check_readable(path, "rank map")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read rank map {path}: {e}") from e
        data = parse_json(text, f"rank map {path}")
        return cls.from_dict(data, str(path))


def _whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _table(v, value_ok=lambda _: True) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and value_ok(x) for k, x in v.items())


def _budget_fields(v) -> bool:
    return _table(v) and _whole(v.get("params")) and isinstance(v.get("spec"), (str, type(None)))


def _site_fields(v) -> bool:
    keys = ("kind", "module", "cost_per_rank", "max_rank")
    return (
        isinstance(v, dict)
        and set(v) == set(keys)
        and all(isinstance(v[k], str) for k in keys[:2])
        and all(_whole(v[k]) for k in keys[2:])
    )


# ---------------------------------------------------------------------------------------------
# files


def heatmap_path(path: str | os.PathLike) -> Path:
    """The heatmap PNG beside a rank map: same folder, same stem."""
    return Path(path).with_suffix(".png")


def write_rank_map(
    allocation: RankAllocation,
    path: str | os.PathLike,
    force: bool = False,
    heatmap: bool = True,
    title: str | None = None,
) -> tuple[Path, Path | None]:
    """Write the rank map JSON and (by default) its heatmap PNG; returns both paths."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        raise UserError(f"{path}: a rank map is a .json file")
    if heatmap and not allocation.sites:
        raise UserError(f"{path}: a rank map without site details has no heatmap")
    png = heatmap_path(path) if heatmap else None
    check_writable(path, force)
    if png is not None:
        check_writable(png, force)
    with atomic_output(path, force) as tmp:
        tmp.write_text(json.dumps(allocation.to_dict(), indent=2) + "\n")
    if png is not None:
        save_heatmap(allocation, png, force, title)
    return path, png


def read_rank_map(path: str | os.PathLike) -> dict[str, int]:
    """The {site: rank} map of a rank map JSON (as written by write_rank_map, or by hand)."""
    return RankAllocation.read(path).ranks


# ---------------------------------------------------------------------------------------------
# heatmap and summary


def site_column(site: Site | SiteInfo) -> str:
    """The heatmap column (module kind) of a site: conv, q, k, v, o, fc1, fc2, mlp or linear."""
    if site.kind == "conv":
        return "conv"
    if site.kind.startswith("attn-"):
        return site.kind[len("attn-") :]
    leaf = site.module.rsplit(".", 1)[-1]
    if site.kind == "mlp":
        return leaf if leaf in ("fc1", "fc2") else "mlp"
    return "linear"


def site_row(site: Site | SiteInfo) -> str:
    """The heatmap row (block) of a site: its module path up to the last block index before the
    layer itself (`layers.0.residual_group.blocks.3.attn.qkv` -> `...blocks.3`); a layer
    outside any numbered block is a row of its own."""
    parts = site.module.split(".")
    for i in range(len(parts) - 1, 0, -1):
        if parts[i - 1].isdigit():
            return ".".join(parts[:i])
    return site.module


def rank_grid(sites: list[Site] | list[SiteInfo], ranks: dict[str, int]):
    """(row labels, column labels, {(row, column): (site, rank)}) in model order.

    A row with several sites of one kind (the convs of a residual block) gets columns
    `conv`, `conv#2`, ...
    """
    rows: list[str] = []
    cells: dict[tuple[str, str], tuple[str, int]] = {}
    for s in sites:
        row, base = site_row(s), site_column(s)
        if row not in rows:
            rows.append(row)
        col, n = base, 1
        while (row, col) in cells:
            n += 1
            col = f"{base}#{n}"
        cells[(row, col)] = (s.name, ranks.get(s.name, 0))
    used = {c for _, c in cells}

    def key(col):
        base, _, n = col.partition("#")
        return (COLUMNS.index(base), int(n or 1))

    return rows, sorted(used, key=key), cells


def save_heatmap(
    allocation: RankAllocation, path: str | os.PathLike, force: bool = False, title=None
) -> Path:
    """Ranks as a blocks x module-kinds heatmap PNG (the paper's Figure 5 layout)."""
    rows, cols, cells = rank_grid(allocation.sites, allocation.ranks)
    grid = np.full((len(rows), len(cols)), np.nan)
    for (row, col), (_, rank) in cells.items():
        grid[rows.index(row), cols.index(col)] = rank
    fig = matplotlib_figure.Figure(
        figsize=(1.6 + 0.55 * len(cols), 1.6 + 0.22 * len(rows)), dpi=120
    )
    matplotlib_agg.FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_facecolor("#e8e8e8")  # cells without a site
    top = max(1, int(np.nanmax(grid)))
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=0, vmax=top, aspect="auto")
    if grid.size <= 800:
        for (row, col), (_, rank) in cells.items():
            i, j = rows.index(row), cols.index(col)
            dark = rank < 0.6 * top
            ax.text(
                j,
                i,
                str(rank),
                ha="center",
                va="center",
                fontsize=6,
                color="white" if dark else "black",
            )
    ax.set_xticks(range(len(cols)), cols, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=6)
    ax.set_xlabel("module kind")
    ax.set_ylabel("block")
    fig.colorbar(image, ax=ax, label="LoRA rank", fraction=0.05)
    s = allocation.settings
    ax.set_title(
        title
        or f"{s.get('model', 'model')}: {s.get('allocator', 'given')} allocation, "
        f"{s.get('score', 'no')} scores\n{_used(allocation)}",
        fontsize=8,
    )
    fig.tight_layout()
    with atomic_output(path, force) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def summary_table(allocation: RankAllocation) -> str:
    """A per-kind summary of an allocation, for the terminal."""
    groups: dict[str, list[tuple[SiteInfo, int]]] = {}
    for s in allocation.sites:
        groups.setdefault(site_column(s), []).append((s, allocation.ranks[s.name]))
    lines = [f"{'kind':<7}{'sites':>6}{'adapted':>9}{'min':>5}{'mean':>7}{'max':>5}{'params':>12}"]
    for kind in COLUMNS:
        if kind not in groups:
            continue
        items = groups[kind]
        rs = [r for _, r in items]
        params = sum(r * s.cost_per_rank for s, r in items)
        lines.append(
            f"{kind:<7}{len(items):>6}{sum(r > 0 for r in rs):>9}{min(rs):>5}"
            f"{sum(rs) / len(rs):>7.1f}{max(rs):>5}{params:>12,}"
        )
    a = allocation
    total = f"total: {_used(a)}" + ("" if a.targets == "all" else f" on {a.targets} sites")
    if a.used is not None and a.base_params:
        total += f", {100 * a.used / a.base_params:.2f}% of the base model's {a.base_params:,}"
    lines.append(total)
    if a.rho is not None:
        lines.append(f"score stability: Spearman rho {a.rho:.3f} (even vs odd batches)")
    if a.scores:
        top = sorted(a.sites, key=lambda s: -a.scores.get(s.name, 0.0))[:5]
        lines.append("top sites: " + ", ".join(f"{s.name} (r={a.ranks[s.name]})" for s in top))
    return "\n".join(lines)


def _used(a: RankAllocation) -> str:
    """'N of a B-parameter budget (P%)', as far as a (maybe hand-written) map tells."""
    if a.used is None:
        return "parameters not recorded"
    if not a.budget:
        return f"{a.used:,} parameters"
    return f"{a.used:,} of a {a.budget:,}-parameter budget ({100 * a.used / a.budget:.2f}%)"
