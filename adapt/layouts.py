"""Dataset layouts: where a folder keeps its HR and LR images, and which LR file goes with an HR.

Training (`--data`, `--val`), allocation and evaluation (`--hr` without `--lr`) all find their
images through `detect`, which tries the entries of LAYOUTS in order on a folder:

- DIV2K or Flickr2K root: `DIV2K_train_HR/0001.png` with one `DIV2K_train_LR_*/X4/0001x4.png`
  (`Flickr2K_HR/000001.png`, `Flickr2K_LR_bicubic/X4/000001x4.png`);
- HR and LR subfolders: `*HR/` beside `*LR/` (any case: DRealSR's `train_HR/NAME_x1.png` with
  `train_LR/NAME_x4.png`, or `hr/` and `lr/`), stems matched as for two named folders;
- RealSR V3 and V2: `NAME_HR.png` beside `NAME_LR4.png` in one folder (V2 also keeps `_LR2` and
  `_LR3` there: the scale picks the LR images);
- DRealSR in one folder: `NAME_x1.png` (HR) beside `NAME_x4.png` (LR);
- HR-only: every image of the folder, without LR (degraded on the fly by the caller).

Two folders named separately (`--lr-dir`/`--hr-dir`, eval's `--lr`/`--hr`) are paired by
`pair_folders` under SAME_STEM. An HR file finds its LR file by stem: the stems are equal once a
layout's suffix is stripped from each (LR `_x4`, `x4`/`X4`, `_LR4`, `LR4`; HR `_HR`, `_x1`; in
any case), or equal as they are. A folder that pairs only partly is one error naming the first
HR image without LR (and the first LR image left over). A new convention is one more `Layout` in
LAYOUTS; nothing else needs to change.

Pure pathlib: no torch and no pixel decoding, so it runs before any heavy import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from adaptsr.core.errors import UserError
from adaptsr.core.images import IMAGE_SUFFIXES, list_images

# (hr, lr): lr is None for an HR-only image, whose LR image is made from it
Item = tuple[Path, Path | None]


@dataclass(frozen=True)
class Layout:
    """One convention. In a folder, "{scale}" stands for the upscaling factor (4 in `_LR4`)."""

    name: str  # leads the description of a detected folder: "RealSR-style Canon"
    # Where the HR and LR images are, as globs relative to the root ("." the root itself; None:
    # the two folders are named by the user, so `detect` never picks this layout). When both
    # globs match and one matches several folders, that is an error: the user picks one pair.
    hr_dir: str | None = "."
    lr_dir: str | None = "."
    # Stripped (one of them, any case) from an HR / LR stem to get the key both share. When HR
    # and LR share one folder they also tell the two apart: an image is HR when its stem ends in
    # an HR suffix, LR when it ends in an LR suffix (exact case), anything else is ignored.
    hr_suffixes: tuple[str, ...] = ()
    lr_suffixes: tuple[str, ...] = ()
    paired: bool = True  # False: HR images only (the dirs and suffixes of LR are unused)

    def suffixes(self, role: str, scale: int) -> tuple[str, ...]:
        """The HR ("hr") or LR ("lr") suffixes at this scale."""
        raw = self.hr_suffixes if role == "hr" else self.lr_suffixes
        return tuple(s.replace("{scale}", str(scale)) for s in raw)

    def find(self, root: Path, scale: int) -> tuple[str, list[Item]] | None:
        """(description, items) when `root` is in this layout, else None."""
        if not self.paired:
            hr_dirs = _folders(root, self.hr_dir, scale)
            files = list_images(hr_dirs[0]) if len(hr_dirs) == 1 else []
            if not files:
                return None
            return f"{self.name} {hr_dirs[0].name}", [(f, None) for f in files]
        hr_dirs, lr_dirs = _folders(root, self.hr_dir, scale), _folders(root, self.lr_dir, scale)
        if not hr_dirs or not lr_dirs:
            return None
        if len(hr_dirs) > 1 or len(lr_dirs) > 1:
            # both kinds exist, so the root is in this layout, but which pair is meant?
            names = ", ".join(str(d.relative_to(root)) for d in hr_dirs + lr_dirs)
            raise UserError(
                f"{root} holds several {self.name} folders ({names}): "
                "name one pair with --lr-dir and --hr-dir (eval: --lr and --hr)"
            )
        hr_dir, lr_dir = hr_dirs[0], lr_dirs[0]
        hr_files = list_images(hr_dir)
        lr_files = hr_files if lr_dir == hr_dir else list_images(lr_dir)
        if hr_dir == lr_dir:
            # One folder: only the suffixes say which image is which, so a folder without both
            # kinds is not in this layout (it may be the next one's, e.g. HR-only).
            hr_files = [f for f in hr_files if f.stem.endswith(self.suffixes("hr", scale))]
            lr_files = [f for f in lr_files if f.stem.endswith(self.suffixes("lr", scale))]
            if not hr_files or not lr_files:
                return None
            where = root.name
        else:
            # Separate folders that exist are the layout, even when empty or incomplete: the
            # error then names the missing LR image instead of trying another layout.
            where = f"{hr_dir.relative_to(root)} + {lr_dir.relative_to(root)}"
        return f"{self.name} {where}", match_pairs(hr_files, lr_files, scale, self)


def _folders(root: Path, pattern: str | None, scale: int) -> list[Path]:
    """The folders `pattern` names under root, sorted ([] when pattern is None)."""
    if pattern is None:
        return []
    if pattern == ".":
        return [root]
    return sorted(d for d in root.glob(pattern.replace("{scale}", str(scale))) if d.is_dir())


# Two folders given by the user; DIV2K pairs the same way (its LR stems carry `x4`). Longer
# suffixes first: `_x4` must go whole, not leave `name_`.
SAME_STEM = Layout(
    "paired",
    hr_dir=None,
    lr_dir=None,
    hr_suffixes=("_HR", "_x1"),
    lr_suffixes=("_x{scale}", "x{scale}", "_LR{scale}", "LR{scale}"),
)
DIV2K = Layout(
    "DIV2K-style",
    hr_dir="*_HR",
    lr_dir="*_LR_*/X{scale}",
    hr_suffixes=SAME_STEM.hr_suffixes,
    lr_suffixes=SAME_STEM.lr_suffixes,
)
SUBFOLDERS = Layout(
    "HR/LR folders",
    hr_dir="*[Hh][Rr]",
    lr_dir="*[Ll][Rr]",
    hr_suffixes=SAME_STEM.hr_suffixes,
    lr_suffixes=SAME_STEM.lr_suffixes,
)
REALSR = Layout("RealSR-style", hr_suffixes=("_HR",), lr_suffixes=("_LR{scale}",))
DREALSR = Layout("DRealSR-style", hr_suffixes=("_x1",), lr_suffixes=("_x{scale}",))
HR_ONLY = Layout("HR-only", paired=False)

# Detection order: a folder is in the first layout that finds it. HR-only takes any folder with
# images, so it comes last.
LAYOUTS: tuple[Layout, ...] = (DIV2K, SUBFOLDERS, REALSR, DREALSR, HR_ONLY)


def detect(
    root: str | os.PathLike, scale: int, among: tuple[Layout, ...] | None = None
) -> tuple[str, list[Item]]:
    """The layout of a folder: (description, [(hr, lr or None)] sorted by key).

    among: the layouts to try, in order (default LAYOUTS, read at call time).
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(
            f"no such folder: {root}" if not root.exists() else f"{root} is not a folder"
        )
    for layout in LAYOUTS if among is None else among:
        found = layout.find(root, scale)
        if found is not None:
            return found
    if not list_images(root):
        raise UserError(f"no images in {root} (looked for {', '.join(IMAGE_SUFFIXES)})")
    names = " or ".join(layout.name for layout in (LAYOUTS if among is None else among))
    raise UserError(f"{root} is not a {names} folder")


def pair_folders(
    hr_dir: str | os.PathLike, lr_dir: str | os.PathLike, scale: int
) -> tuple[str, list[tuple[Path, Path]]]:
    """(description, [(hr, lr)]) of two folders matched by stem under SAME_STEM."""
    hr_dir, lr_dir = Path(hr_dir), Path(lr_dir)
    hr_files, lr_files = list_images(hr_dir), list_images(lr_dir)
    for folder, files in ((hr_dir, hr_files), (lr_dir, lr_files)):
        if not files:
            raise UserError(f"no images in {folder} (looked for {', '.join(IMAGE_SUFFIXES)})")
    pairs = match_pairs(hr_files, lr_files, scale, SAME_STEM)
    return f"{SAME_STEM.name} {hr_dir.name} + {lr_dir.name}", pairs


def match_pairs(
    hr_files: list[Path], lr_files: list[Path], scale: int, layout: Layout = SAME_STEM
) -> list[tuple[Path, Path]]:
    """(hr, lr) sorted by key; every HR image needs its LR image (extra LR images are unused)."""
    hr_map = _keyed(hr_files, layout.suffixes("hr", scale))
    lr_suffixes = layout.suffixes("lr", scale)
    lr_map = _keyed(lr_files, lr_suffixes)
    missing = [k for k in hr_map if k not in lr_map]
    if missing:
        where = lr_files[0].parent if lr_files else "the LR folder"
        rule = "LR names must match HR stems"
        if lr_suffixes:
            quoted = " or ".join(f"'{s}'" for s in lr_suffixes)
            rule += f", optionally with an {quoted} suffix"
        unused = sorted(k for k in lr_map if k not in hr_map)
        left = f"; first LR image without HR: {lr_map[unused[0]].name}" if unused else ""
        raise UserError(
            f"{len(missing)} HR image(s) without an LR image in {where}, e.g. "
            f"{hr_map[missing[0]].name} ({rule}){left}"
        )
    return [(hr_map[k], lr_map[k]) for k in sorted(hr_map)]


def _strip_suffix(stem: str, suffixes: tuple[str, ...]) -> str:
    for s in suffixes:
        # never strip a whole stem: an image named `x4.png` keeps its name
        if stem.lower().endswith(s.lower()) and len(stem) > len(s):
            return stem[: -len(s)]
    return stem


def _keyed(files: list[Path], suffixes: tuple[str, ...]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in files:
        key = _strip_suffix(f.stem, suffixes)
        if key in out:
            raise UserError(f"two images named {key!r} in {f.parent}: {out[key].name}, {f.name}")
        out[key] = f
    return out
