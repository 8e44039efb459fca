"""Training data: image folders, random crops and augmentation, a resumable data order.

Folder layouts (DIV2K root, RealSR V3, two folders matched by stem, HR-only) are found by
adaptsr.adapt.layouts. Two kinds of source:

- HR-only folders. The dataset returns HR crops; the training loop degrades whole batches on the
  training device (`make_degrader`), so the CPU workers only decode and crop.
- Paired folders (real LR/HR photos). The dataset returns aligned LR and HR crops.

One run may mix them (`--data DIR[:WEIGHT[:DEGRADATION]]`, repeated; `parse_source`): each
HR-only source then has a degrader of its own (its DEGRADATION, else the run's), pairs keep
their LR crops, and a batch may hold both. Without weights every image is equally likely (a
larger folder is drawn more often); with a WEIGHT on any source, a sample first draws its source
with probability WEIGHT / total (1 where none is given), then an image of it uniformly.

Images are read with adaptsr.core.images.read_image (png, jpg, webp, bmp, tif; 8/16-bit; gray
replicated to RGB, alpha dropped; upright: EXIF orientation applied). Folders are scanned once
from the file headers: corrupt files, images smaller than the crop and LR/HR sizes that disagree
with the scale are found before training starts.

The data order is a pure function of (seed, iteration): sample k of the run is item
perm_e[k mod N] of epoch e = k div N, with its own crop/augmentation seed. Resuming at iteration
i therefore needs no saved sampler state, and DDP ranks take disjoint slices of each global batch.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage

from adaptsr.adapt import layouts
from adaptsr.adapt.choices import DEGRADATIONS
from adaptsr.adapt.degradation_file import settings_of
from adaptsr.adapt.degradations import Degrader
from adaptsr.core.errors import UserError
from adaptsr.core.images import check_header, check_pixels, probe, read_image


def derive_seed(*parts: int) -> int:
    """An independent seed for each purpose, sample and process, from the run's seed."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


@dataclass(frozen=True)
class Entry:
    name: str
    hr: Path
    lr: Path | None  # None: HR-only, degraded on the fly
    hr_size: tuple[int, int]  # (height, width)
    source: int = 0  # index of its --data source


@dataclass(frozen=True)
class Source:
    """One --data source: a folder, an optional sampling weight and, for HR-only folders, an
    optional degradation of its own."""

    path: str
    weight: float | None = None
    degradation: str | None = None
    paired: bool = False  # set by the scan


def parse_source(spec: str | os.PathLike) -> Source:
    """`DIR`, `DIR:WEIGHT`, `DIR:DEGRADATION` or `DIR:WEIGHT:DEGRADATION` (a folder whose name
    itself ends in such a part is given as `DIR:1`). DEGRADATION is a preset name or a .toml or
    .json degradation file, checked here."""
    text = str(spec)
    path, weight, kind = text, None, None
    head, sep, tail = path.rpartition(":")
    if sep and head and (tail in DEGRADATIONS or Path(tail).suffix.lower() in (".toml", ".json")):
        path, kind = head, tail
        settings_of(kind, f"--data {text}")
    head, sep, tail = path.rpartition(":")
    if sep and head:
        try:
            weight = float(tail)
        except ValueError:
            weight = None
        else:
            path = head
            if not (weight > 0 and weight < float("inf")):
                raise UserError(f"--data {text}: the weight must be a positive number")
    return Source(path, weight, kind)


@dataclass
class Scan:
    """The usable images of one or more sources, and what was left out."""

    entries: list[Entry]
    paired: bool  # every source is paired (False also for a mix: see `mixed`)
    layouts: list[str]
    corrupt: list[Path] = field(default_factory=list)
    too_small: list[Path] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)

    @property
    def mixed(self) -> bool:
        """HR-only and paired sources together, or a source with a degradation of its own."""
        kinds = {s.paired for s in self.sources}
        return len(kinds) > 1 or any(s.degradation for s in self.sources)

    @property
    def weighted(self) -> bool:
        return any(s.weight is not None for s in self.sources)

    def summary(self) -> str:
        kind = "LR/HR pairs" if self.paired else "HR images"
        if self.mixed:
            kind = "images"
        text = f"{len(self.entries)} {kind} ({', '.join(self.layouts)})"
        if self.corrupt:
            text += f"; skipped {len(self.corrupt)} unreadable (e.g. {self.corrupt[0].name})"
        if self.too_small:
            text += (
                f"; skipped {len(self.too_small)} smaller than the crop "
                f"(e.g. {self.too_small[0].name})"
            )
        return text


# ---------------------------------------------------------------------------------------------
# scanning images


def header_size(path: Path) -> tuple[int, int] | None:
    """(height, width) as read_image returns it (EXIF orientation applied), from the header (PIL
    checks the structure without decoding pixels); a full decode when PIL cannot parse the
    format (e.g. 48-bit TIFF); None when the file is unreadable, above the pixel limit, has
    several frames or floating-point samples."""
    header = probe(path)
    try:
        check_header(path, header)
    except UserError:
        return None
    try:
        with PILImage.open(path) as im:
            w, h = im.size
            check_pixels(path, h, w)  # above the pixel limit: refused like an unreadable file
            im.verify()  # checks chunk CRCs (PNG) and structure without decoding pixels
        return header.upright_size if header is not None else (h, w)
    except Exception:
        pass
    try:
        return read_image(path).size
    except UserError:
        return None


def scan(
    data: list[str | os.PathLike] | None = None,
    scale: int = 4,
    patch: int = 256,
    lr_dir: str | os.PathLike | None = None,
    hr_dir: str | os.PathLike | None = None,
    strict: bool = False,
) -> Scan:
    """Find and check the training images of every source before training starts.

    patch is the HR crop size. Unreadable images and images smaller than the crop are skipped
    (counted in the result) or, with strict, are an error. An LR/HR size that disagrees with the
    scale is always an error naming the file.
    """
    sources: list[tuple[str, list[tuple[Path, Path | None]]]] = []
    specs: list[Source] = []
    if (lr_dir is None) != (hr_dir is None):
        raise UserError("give both --lr-dir and --hr-dir, or neither")
    if lr_dir is not None:
        sources.append(layouts.pair_folders(hr_dir, lr_dir, scale))
        specs.append(Source(f"{hr_dir} + {lr_dir}"))
    for folder in data or []:
        spec = parse_source(folder)
        sources.append(layouts.detect(spec.path, scale))
        specs.append(spec)
    if not sources:
        raise UserError("no training data: give --data DIR (or --lr-dir and --hr-dir)")
    specs = [
        replace(spec, paired=all(lr is not None for _, lr in items))
        for spec, (_, items) in zip(specs, sources, strict=True)
    ]
    for spec in specs:
        if spec.paired and spec.degradation:
            raise UserError(
                f"--data {spec.path}:{spec.degradation}: a folder of LR/HR pairs is not degraded"
            )
    out = Scan([], all(s.paired for s in specs), [name for name, _ in sources], sources=specs)
    for index, (_, items) in enumerate(sources):
        for hr, lr in items:
            hr_size = header_size(hr)
            lr_size = header_size(lr) if lr is not None else None
            if hr_size is None or (lr is not None and lr_size is None):
                bad = hr if hr_size is None else lr
                if strict:  # several frames, floating point, too many pixels: said so
                    check_header(bad, probe(bad))
                    raise UserError(f"cannot read image {bad}: corrupt or not an image")
                out.corrupt.append(bad)
                continue
            if lr_size is not None:
                (lh, lw), (hh, hw) = lr_size, hr_size
                # HR may exceed LR x scale by a mod-crop remainder (< scale pixels).
                if not (0 <= hh - lh * scale < scale and 0 <= hw - lw * scale < scale):
                    raise UserError(
                        f"{lr}: LR {lw}x{lh} times {scale} does not match HR {hw}x{hh} ({hr.name})"
                    )
            if min(hr_size) < patch:
                if strict:
                    h, w = hr_size
                    raise UserError(f"{hr}: {w}x{h} is smaller than the {patch}x{patch} HR crop")
                out.too_small.append(hr)
                continue
            out.entries.append(Entry(hr.stem, hr, lr, hr_size, index))
    if not out.entries:
        raise UserError(f"no usable training images: {out.summary()}")
    return out


def split_validation(scan_result: Scan, count: int) -> tuple[list[Entry], list[Entry]]:
    """(train, val): the last `count` images (in name order) are held out for validation."""
    entries = scan_result.entries
    if count <= 0:
        return entries, []
    if count >= len(entries):
        raise UserError(
            f"--val-split {count} leaves no training images (only {len(entries)} found)"
        )
    return entries[:-count], entries[-count:]


# ---------------------------------------------------------------------------------------------
# crops


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32))


def augment(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The same random element of the 8 flips/90-degree rotations applied to every array."""
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = []
    for a in arrays:
        a = np.rot90(a, k, axes=(0, 1))
        out.append(a[:, ::-1] if flip else a)
    return out


class CropDataset(torch.utils.data.Dataset):
    """Random crops of training images, indexed by (image index, sample seed).

    HR-only: {"hr": (3, patch, patch)}. Paired: {"lr": (3, patch/scale, ...), "hr": ...}, the HR
    crop at `scale` times the LR crop position.
    """

    def __init__(
        self, entries: list[Entry], patch: int, scale: int, flips: bool = True, mixed=False
    ):
        if patch % scale:
            raise UserError(f"the HR crop {patch} must be a multiple of the scale {scale}")
        self.entries = entries
        self.patch, self.scale, self.flips = patch, scale, flips
        self.mixed = mixed  # items also carry their source (collated by `collate_mixed`)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, seed = key
        entry = self.entries[index]
        rng = np.random.default_rng(seed)
        hr = read_image(entry.hr).rgb
        if entry.lr is None:
            h, w = hr.shape[:2]
            y = int(rng.integers(h - self.patch + 1))
            x = int(rng.integers(w - self.patch + 1))
            crops = [hr[y : y + self.patch, x : x + self.patch]]
        else:
            lr = read_image(entry.lr).rgb
            p, s = self.patch // self.scale, self.scale
            h, w = lr.shape[:2]
            y = int(rng.integers(h - p + 1))
            x = int(rng.integers(w - p + 1))
            crops = [hr[y * s : (y + p) * s, x * s : (x + p) * s], lr[y : y + p, x : x + p]]
        if self.flips:
            crops = augment(crops, rng)
        out = {"hr": _to_tensor(crops[0])}
        if entry.lr is not None:
            out["lr"] = _to_tensor(crops[1])
        if self.mixed:
            out["source"] = entry.source
        return out


def collate_mixed(items: list[dict]) -> dict:
    """A batch of a mixed run: "hr", "source", and "lr_of" (each item's LR crop, None where its
    source is HR-only) unless every item has one ("lr") or none does."""
    out = {"hr": torch.stack([i["hr"] for i in items])}
    out["source"] = torch.tensor([i["source"] for i in items])
    lrs = [i.get("lr") for i in items]
    if all(lr is not None for lr in lrs):
        out["lr"] = torch.stack(lrs)
    elif any(lr is not None for lr in lrs):
        out["lr_of"] = lrs
    return out


def sampling_weights(entries: list[Entry], found: Scan) -> list[float] | None:
    """Per-image probabilities when a source has a weight (None: every image equally likely):
    the source's weight (1 when not given) shared equally by its images."""
    if not found.weighted:
        return None
    counts: dict[int, int] = {}
    for e in entries:
        counts[e.source] = counts.get(e.source, 0) + 1
    raw = {i: s.weight if s.weight is not None else 1.0 for i, s in enumerate(found.sources)}
    total = sum(raw[i] for i in counts)
    return [raw[e.source] / total / counts[e.source] for e in entries]


class BatchPlan(torch.utils.data.Sampler):
    """The keys of every batch of a run, from iteration `start` (0-based) to `stop`.

    A process's batch at iteration i is its slice of the global batch: samples i*B + rank*b ...
    i*B + (rank+1)*b - 1 with b = B / world (`dist`: an object with rank and world).
    """

    def __init__(
        self,
        n: int,
        global_batch: int,
        seed: int,
        start: int,
        stop: int,
        dist=None,
        weights: list[float] | None = None,
    ):
        rank, world = (dist.rank, dist.world) if dist is not None else (0, 1)
        if global_batch % world:
            raise UserError(f"batch {global_batch} is not divisible by {world} processes")
        self.n, self.batch, self.seed = n, global_batch, seed
        self.start, self.stop = start, stop
        self.rank, self.world = rank, world
        self._epoch, self._perm = -1, np.arange(0)
        # weighted sampling (with replacement): image i with probability weights[i]
        self._cdf = None if weights is None else np.cumsum(weights) / float(np.sum(weights))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def key(self, k: int) -> tuple[int, int]:
        """(image index, crop seed) of sample k of the run."""
        if self._cdf is not None:
            u = np.random.default_rng([self.seed, k, 2]).random()
            index = min(int(np.searchsorted(self._cdf, u, side="right")), self.n - 1)
            return index, derive_seed(self.seed, k, 1)
        epoch = k // self.n
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._epoch = epoch
        seed = derive_seed(self.seed, k, 1)
        return int(self._perm[k % self.n]), seed

    def keys(self, iteration: int) -> list[tuple[int, int]]:
        local = self.batch // self.world
        first = iteration * self.batch + self.rank * local
        return [self.key(k) for k in range(first, first + local)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for i in range(self.start, self.stop):
            yield self.keys(i)


def loader(
    dataset: CropDataset, plan: BatchPlan, workers: int, pin: bool, collate=None
) -> torch.utils.data.DataLoader:
    """Batches of `dataset` in `plan`'s order; `collate` replaces the default collation."""
    # A private generator: the loader must not draw from the global torch RNG, or a resumed run
    # would see different random numbers than an uninterrupted one.
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=plan,
        collate_fn=collate or (collate_mixed if dataset.mixed else None),
        num_workers=workers,
        pin_memory=pin,
        generator=torch.Generator(),
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=_ignore_sigint,
    )


def _ignore_sigint(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group; the main process saves a checkpoint and stops,
    # which needs the workers alive until then.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# ---------------------------------------------------------------------------------------------
# validation


def modcrop(rgb: np.ndarray, scale: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    return rgb[: h - h % scale, : w - w % scale]


def validation_pairs(
    entries: list[Entry], scale: int, degradation: str, seed: int, device
) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, lr (1, 3, h, w), hr (1, 3, H, W)) on the CPU, made once: HR-only images are
    degraded with a fixed seed, so every validation scores the same inputs."""
    out = []
    degrader = None
    for entry in entries:
        hr = _to_tensor(modcrop(read_image(entry.hr).rgb, scale))[None]
        if entry.lr is not None:
            lr = _to_tensor(read_image(entry.lr).rgb)[None]
            h, w = lr.shape[-2] * scale, lr.shape[-1] * scale
            hr = hr[..., :h, :w]
        else:
            if degrader is None:
                degrader = Degrader(degradation, scale, seed, device)
            with torch.no_grad():
                lr = degrader(hr.to(device)).clamp(0, 1).cpu()
        out.append((entry.name, lr, hr))
    return out


def validation_entries(folder: str | os.PathLike, scale: int, strict: bool) -> list[Entry]:
    """Every image of a --val folder (any layout) large enough to be scored: SSIM's 11x11
    window must fit inside the HR image once its `scale`-pixel border is cropped."""
    try:
        return scan([folder], scale=scale, patch=11 + 2 * scale, strict=strict).entries
    except UserError as e:
        raise UserError(f"--val {folder}: {e}") from e
