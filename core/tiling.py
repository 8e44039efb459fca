"""Tiled inference in numpy: any image size through a model with size limits, without seams.

The image is padded (by reflection, bottom and right) to satisfy the model's minimum size and
multiple-of rule, then cut into equal overlapping tiles so that tiles can be batched. Tiles are
spread evenly over each axis, which keeps the recomputed area near what the overlap costs.

Blending: where two tiles overlap, the outer quarter of the overlap on each side is discarded
(the pixels a tile computed near its own border, where zero padding inside the model differs
from the real neighbourhood) and the middle half is a linear cross-fade. The two weights sum to
one, so a model whose receptive field is within a quarter of the overlap gives exactly the
untiled result, and anything wider is faded out instead of cut.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from adaptsr.core.errors import UserError

DEFAULT_TILE = 512


@dataclass(frozen=True)
class SizeRule:
    """Which input heights/widths a model or engine accepts."""

    min_size: int = 1
    multiple_of: int = 1
    max_size: tuple[int, int] | None = None  # largest (height, width), e.g. an engine profile
    static: tuple[int, int] | None = None  # the only (height, width) accepted

    def describe(self) -> str:
        if self.static:
            return f"static input {self.static[0]}x{self.static[1]}"
        text = f"minimum {self.min_size}, multiple of {self.multiple_of}"
        if self.max_size:
            text += f", maximum {self.max_size[0]}x{self.max_size[1]}"
        return text


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def default_overlap(tile: int) -> int:
    """1/32 of the tile (16 px for 512): at most ~7% of the area is computed twice; at least
    4 px, and below half a tile for the smallest tiles (a static 7x7 engine gets 3)."""
    return min(max(4, tile // 32), (tile - 1) // 2)


def padded_size(height: int, width: int, rule: SizeRule) -> tuple[int, int]:
    """The smallest size >= the image's that the model accepts (before tiling)."""
    if rule.static:
        return max(height, rule.static[0]), max(width, rule.static[1])
    least = round_up(rule.min_size, rule.multiple_of)
    return (
        max(round_up(height, rule.multiple_of), least),
        max(round_up(width, rule.multiple_of), least),
    )


def axis_tiles(length: int, tile: int, overlap: int) -> tuple[int, list[int]]:
    """(tile length, start offsets): the fewest tiles of length `tile` that cover [0, length)
    with neighbours overlapping by >= overlap, spread evenly (one tile if it fits)."""
    if tile >= length:
        return length, [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return tile, _spread(length, tile, count)


def _spread(length: int, size: int, count: int) -> list[int]:
    if count == 1:
        return [0]
    # integer steps differing by at most one: the largest step is ceil((L - size) / (n - 1))
    return [(i * (length - size)) // (count - 1) for i in range(count)]


def shrink_tile(length: int, tile: int, overlap: int, rule: SizeRule) -> int:
    """The smallest tile the model accepts (<= tile) that needs no more tiles than `tile`."""
    if tile >= length:
        return length
    count = math.ceil((length - overlap) / (tile - overlap))
    size = round_up(math.ceil((length + (count - 1) * overlap) / count), rule.multiple_of)
    return min(max(size, round_up(rule.min_size, rule.multiple_of)), tile)


def axis_weights(starts: list[int], size: int, length: int, scale: int) -> list[np.ndarray]:
    """Per tile, a 1-D blending weight over its output pixels (partition of unity on [0, L*s))."""
    out_size = size * scale
    weights = []
    for i, start in enumerate(starts):
        w = np.ones(out_size, dtype=np.float32)
        pos = np.arange(out_size, dtype=np.float64) + 0.5 + start * scale  # output pixel centres
        if i > 0:  # fade in across the overlap with the previous tile
            lo, hi = starts[i] * scale, (starts[i - 1] + size) * scale
            w *= _fade(pos, lo, hi)
        if i < len(starts) - 1:  # fade out across the overlap with the next tile
            lo, hi = starts[i + 1] * scale, (start + size) * scale
            w *= 1.0 - _fade(pos, lo, hi)
        weights.append(w)
    return weights


def _fade(pos: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Over [lo, hi): 0 on the first quarter, linear on the middle half, 1 on the last quarter."""
    if hi <= lo:  # tiles that touch without overlap: a hard cut
        return (pos >= lo).astype(np.float32)
    t = (pos - lo) / (hi - lo)
    return np.clip((t - 0.25) * 2.0, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class TilePlan:
    padded: tuple[int, int]  # image size after padding
    tile: tuple[int, int]  # every tile's (height, width)
    ys: list[int]
    xs: list[int]

    @property
    def count(self) -> int:
        return len(self.ys) * len(self.xs)


class TileChoice(NamedTuple):
    """Tiling options checked against a model (choose_tile): the largest tile, or None for the
    whole image at once, and the overlap between tiles in input pixels."""

    shape: tuple[int, int] | None
    overlap: int


def choose_tile(rule: SizeRule, tile: int | None, overlap: int | None) -> TileChoice:
    """Check the tiling options against the model, once per run: every error about --tile and
    --overlap is raised here, and what comes back is trusted by layout_tiles.

    `tile` None = automatic (the engine's static shape, or DEFAULT_TILE within the model's
    largest input), 0 = the whole image at once. Errors here do not depend on the image.
    """
    if tile is not None and tile < 0:
        raise UserError(f"--tile must be 0 (no tiling) or positive, not {tile}")
    if rule.static:
        th, tw = rule.static
        if tile not in (None, 0) and tile != max(th, tw):
            raise UserError(
                f"this engine has a static input of {th}x{tw}: tiles are {th}x{tw} "
                f"(omit --tile or use --tile {max(th, tw)})"
            )
        if tile == 0:
            return TileChoice(None, 0)
    elif tile == 0:
        return TileChoice(None, 0)
    else:
        limit = min(rule.max_size) if rule.max_size else None
        if tile is None:
            tile = min(DEFAULT_TILE, limit) if limit else DEFAULT_TILE
        if tile < rule.min_size:
            raise UserError(
                f"--tile {tile} is smaller than the model's minimum input {rule.min_size}"
            )
        if limit and tile > limit:
            raise UserError(f"--tile {tile} is larger than the model's largest input {limit}")
        tile -= tile % rule.multiple_of
        if tile < max(rule.min_size, 1):
            raise UserError(
                f"--tile is too small for a model whose input must be a multiple of "
                f"{rule.multiple_of} and at least {rule.min_size}"
            )
        th = tw = tile
    if overlap is None:
        overlap = default_overlap(min(th, tw))
    if overlap < 0:
        raise UserError(f"--overlap must be >= 0, not {overlap}")
    if 2 * overlap >= min(th, tw):
        raise UserError(f"--overlap {overlap} must be less than half the tile ({min(th, tw)})")
    return TileChoice((th, tw), overlap)


def plan_tiles(
    height: int, width: int, rule: SizeRule, tile: int | None, overlap: int | None
) -> TilePlan:
    """Choose tile size and positions for one image (see choose_tile for the options)."""
    return layout_tiles(height, width, rule, choose_tile(rule, tile, overlap))


def layout_tiles(height: int, width: int, rule: SizeRule, choice: TileChoice) -> TilePlan:
    """Tile size and positions for one image, from options choose_tile has already checked
    (what remains to refuse depends on the image: a size the untiled model cannot take)."""
    ph, pw = padded_size(height, width, rule)
    shape, overlap = choice
    if shape is None:  # untiled
        if rule.static and (ph, pw) != rule.static:
            th, tw = rule.static
            raise UserError(
                f"{width}x{height} image does not fit the engine's static {tw}x{th} input "
                "without tiling (omit --tile 0)"
            )
        if rule.max_size and (ph > rule.max_size[0] or pw > rule.max_size[1]):
            raise UserError(
                f"{width}x{height} image is larger than the model's largest input "
                f"{rule.max_size[1]}x{rule.max_size[0]}; use tiles (--tile)"
            )
        return TilePlan((ph, pw), (ph, pw), [0], [0])
    th, tw = shape
    if not rule.static:
        th = shrink_tile(ph, th, overlap, rule)
        tw = shrink_tile(pw, tw, overlap, rule)
    th, ys = axis_tiles(ph, th, overlap)
    tw, xs = axis_tiles(pw, tw, overlap)
    return TilePlan((ph, pw), (th, tw), ys, xs)


def tiled_upscale(
    run: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    scale: int,
    rule: SizeRule,
    tile: int | None = None,
    overlap: int | None = None,
    batch: int = 1,
) -> np.ndarray:
    """Upscale a (C, H, W) float32 image through `run` ((N, C, h, w) -> (N, C, h*s, w*s))."""
    bands = [b for _, b in tiled_upscale_bands(run, image, scale, rule, tile, overlap, batch)]
    return bands[0] if len(bands) == 1 else np.concatenate(bands, axis=1)


def tiled_upscale_bands(
    run: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    scale: int,
    rule: SizeRule,
    tile: int | None = None,
    overlap: int | None = None,
    batch: int = 1,
) -> Iterator[tuple[int, np.ndarray]]:
    """tiled_upscale one row of tiles at a time: yields (first output row, (C, rows, W*s) band)
    as soon as no later tile touches those rows, so only one row of tiles is ever held (the
    bands put together are tiled_upscale's result, bit for bit)."""
    if image.ndim != 3:
        raise ValueError(f"expected a (C, H, W) image, got shape {image.shape}")
    check_batch(batch)
    plan = plan_tiles(image.shape[1], image.shape[2], rule, tile, overlap)
    return upscale_bands(run, image, scale, plan, batch)


def check_batch(batch: int) -> None:
    if batch < 1:
        raise UserError(f"--batch must be >= 1, not {batch}")


def upscale_bands(
    run: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    scale: int,
    plan: TilePlan,
    batch: int = 1,
) -> Iterator[tuple[int, np.ndarray]]:
    """tiled_upscale_bands for a planned image (layout_tiles) and a checked batch: no option is
    checked again; only the pixels are (the input's here, the model's below)."""
    if not np.isfinite(image).all():  # float TIFFs may hold them; clipping would hide them
        raise UserError("the input image holds NaN or infinite pixel values")
    channels, height, width = image.shape
    ph, pw = plan.padded
    th, tw = plan.tile
    wy = axis_weights(plan.ys, th, ph, scale)
    wx = axis_weights(plan.xs, tw, pw, scale)
    top = 0  # first output row of the accumulators, which grow down and are cut from the top
    acc = np.zeros((channels, 0, pw * scale), dtype=np.float32)
    norm = np.zeros((0, pw * scale), dtype=np.float32)
    cells = [(i, j) for i in range(len(plan.ys)) for j in range(len(plan.xs))]
    rows: dict[int, np.ndarray] = {}  # input rows of the tile rows in the current batch
    for first in range(0, len(cells), batch):
        group = cells[first : first + batch]
        for i in {i for i, _ in group} - set(rows):
            rows[i] = _padded_rows(image, plan.ys[i], th, pw)
        crops = np.stack([rows[i][:, :, plan.xs[j] : plan.xs[j] + tw] for i, j in group])
        out = run(np.ascontiguousarray(crops, dtype=np.float32))
        expected = (len(group), channels, th * scale, tw * scale)
        if tuple(out.shape) != expected:
            raise UserError(
                f"the model returned shape {tuple(out.shape)} for input {crops.shape}, "
                f"expected {expected} (wrong scale or channel count?)"
            )
        if not np.isfinite(out).all():  # written out, they would become black pixels
            raise UserError(
                "the model returned NaN or infinite values (a broken model, or fp16 overflow: "
                "try the fp32 export)"
            )
        for (i, j), tile_out in zip(group, out, strict=True):
            weight = wy[i][:, None] * wx[j][None, :]
            y0, x0 = plan.ys[i] * scale - top, plan.xs[j] * scale
            grow = y0 + th * scale - norm.shape[0]
            if grow > 0:
                more = np.zeros((channels, grow, pw * scale), dtype=np.float32)
                acc = np.concatenate([acc, more], axis=1)
                norm = np.concatenate([norm, np.zeros_like(more[0])], axis=0)
            acc[:, y0 : y0 + th * scale, x0 : x0 + tw * scale] += tile_out * weight
            norm[y0 : y0 + th * scale, x0 : x0 + tw * scale] += weight
        last = group[-1]
        finished = last[0] if last[1] == len(plan.xs) - 1 else last[0] - 1  # whole tile rows
        for i in [i for i in rows if i <= finished]:
            del rows[i]
        if finished < 0 or plan.ys[finished] * scale < top:
            continue
        # rows no later tile touches
        done = (plan.ys[finished + 1] if finished + 1 < len(plan.ys) else ph) * scale
        keep = min(done, height * scale) - top
        if keep > 0:
            # /norm: already 1 everywhere (partition of unity); guards rounding in the weights
            yield top, acc[:, :keep, : width * scale] / norm[:keep, : width * scale]
        acc, norm, top = acc[:, done - top :], norm[done - top :], done


def _padded_rows(image: np.ndarray, y: int, rows: int, pw: int) -> np.ndarray:
    """Rows y..y+rows of the image reflect-padded to the plan's padded size (only these rows
    are padded, so no padded copy of the whole image is made)."""
    _, height, width = image.shape
    need = np.arange(y, y + rows)
    if need[-1] >= height:  # reflect without repeating the edge, as np.pad(mode="reflect")
        period = 2 * (height - 1) if height > 1 else 1
        need = need % period
        need = np.where(need >= height, period - need, need)
    band = image[:, need]
    if pw != width:
        band = np.pad(band, ((0, 0), (0, 0), (0, pw - width)), mode="reflect")
    return band
