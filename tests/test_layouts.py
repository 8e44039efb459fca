"""adaptsr.adapt.layouts: each folder convention is detected and paired, and a new registry entry
is picked up by detection (and so by training) with no other change."""

import sys

import numpy as np
import pytest

from adaptsr.adapt import layouts
from adaptsr.core.errors import UserError
from adaptsr.core.images import Image, write_image


def _png(path, h=8, w=8, seed=0):
    rgb = np.random.default_rng(seed).random((h, w, 3)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(Image(rgb=rgb, alpha=None, bit_depth=8, gray=False), path)
    return path


def _names(items):
    return [(hr.name, lr.name if lr is not None else None) for hr, lr in items]


def test_no_torch_import():
    # runs in a fresh interpreter: the test session itself has torch loaded already
    import subprocess

    code = "import sys, adaptsr.adapt.layouts; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_div2k_root(tmp_path):
    root = tmp_path / "DIV2K"
    for i in (1, 2):
        _png(root / "DIV2K_train_HR" / f"{i:04d}.png", 16, 16)
        _png(root / "DIV2K_train_LR_bicubic" / "X4" / f"{i:04d}x4.png", 4, 4)
        _png(root / "DIV2K_train_LR_bicubic" / "X2" / f"{i:04d}x2.png", 8, 8)
    name, items = layouts.detect(root, 4)
    assert name == "DIV2K-style DIV2K_train_HR + DIV2K_train_LR_bicubic/X4"
    assert _names(items) == [("0001.png", "0001x4.png"), ("0002.png", "0002x4.png")]
    name, items = layouts.detect(root, 2)  # the scale picks the LR track
    assert name.endswith("X2") and _names(items)[0] == ("0001.png", "0001x2.png")
    # a second LR track at the same scale is ambiguous
    _png(root / "DIV2K_train_LR_unknown" / "X4" / "0001x4.png", 4, 4)
    with pytest.raises(UserError, match="several DIV2K-style folders.*--lr-dir and --hr-dir"):
        layouts.detect(root, 4)


def test_realsr_folder(tmp_path):
    folder = tmp_path / "Canon"
    for stem in ("Canon_001", "Canon_002"):
        _png(folder / f"{stem}_HR.png", 16, 16)
        _png(folder / f"{stem}_LR4.png", 4, 4)
        _png(folder / f"{stem}_LR2.png", 8, 8)  # another scale: ignored at x4
    name, items = layouts.detect(folder, 4)
    assert name == "RealSR-style Canon"
    assert _names(items) == [
        ("Canon_001_HR.png", "Canon_001_LR4.png"),
        ("Canon_002_HR.png", "Canon_002_LR4.png"),
    ]
    assert _names(layouts.detect(folder, 2)[1])[0] == ("Canon_001_HR.png", "Canon_001_LR2.png")


def test_same_stem_folders(tmp_path):
    hr, lr = tmp_path / "hr", tmp_path / "lr"
    _png(hr / "a.png", 16, 16)
    _png(hr / "b_HR.png", 16, 16)
    _png(hr / "c.png", 16, 16)
    _png(lr / "a.png", 4, 4)  # same stem
    _png(lr / "bx4.png", 4, 4)  # DIV2K suffix (and HR's _HR stripped)
    _png(lr / "c_lr4.png", 4, 4)  # RealSR suffix, any case
    _png(lr / "extra.png", 4, 4)  # an LR image without HR is unused
    name, pairs = layouts.pair_folders(hr, lr, 4)
    assert name == "paired hr + lr"
    assert _names(pairs) == [("a.png", "a.png"), ("b_HR.png", "bx4.png"), ("c.png", "c_lr4.png")]
    assert layouts.match_pairs(sorted(hr.iterdir()), sorted(lr.iterdir()), 4) == pairs


def test_hr_only_folder(tmp_path):
    folder = tmp_path / "photos"
    _png(folder / "b.png")
    _png(folder / "a.png")
    _png(folder / "x_HR.png")  # an HR name without any LR image is just an image
    (folder / "notes.txt").write_text("not an image")
    name, items = layouts.detect(folder, 4)
    assert name == "HR-only photos"
    assert _names(items) == [("a.png", None), ("b.png", None), ("x_HR.png", None)]


def test_missing_lr_is_an_error_naming_the_file(tmp_path):
    hr, lr = tmp_path / "hr", tmp_path / "lr"
    _png(hr / "0001.png", 16, 16)
    _png(hr / "0002.png", 16, 16)
    _png(lr / "0001x4.png", 4, 4)
    with pytest.raises(UserError, match=r"1 HR image\(s\) without an LR image in .*, e\.g\. 0002"):
        layouts.pair_folders(hr, lr, 4)
    # the same in a RealSR folder, whose LR names carry only _LR4
    folder = tmp_path / "real"
    _png(folder / "a_HR.png", 16, 16)
    _png(folder / "a_LR4.png", 4, 4)
    _png(folder / "b_HR.png", 16, 16)
    with pytest.raises(UserError, match=r"e\.g\. b_HR\.png .*'_LR4' suffix"):
        layouts.detect(folder, 4)
    # two LR images with the same key
    _png(lr / "0001.png", 4, 4)
    with pytest.raises(UserError, match="two images named '0001'"):
        layouts.pair_folders(hr, lr, 4)


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        layouts.detect(tmp_path / "missing", 4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images in"):
        layouts.detect(tmp_path / "empty", 4)
    _png(tmp_path / "hr" / "a.png")
    with pytest.raises(UserError, match="no images in .*empty"):
        layouts.pair_folders(tmp_path / "hr", tmp_path / "empty", 4)
    with pytest.raises(UserError, match="not a RealSR-style folder"):
        layouts.detect(tmp_path / "hr", 4, among=(layouts.REALSR,))


def test_a_new_registry_entry_is_used_by_detection(tmp_path, monkeypatch):
    # one folder with NAME_hr.png beside NAME_lr.png: no built-in layout pairs it
    folder = tmp_path / "lower"
    _png(folder / "a_hr.png", 16, 16)
    _png(folder / "a_lr.png", 4, 4)
    assert layouts.detect(folder, 4)[0] == "HR-only lower"
    # a root with HR/ and LR_x{scale}/ subfolders, LR stems ending in _lr
    root = tmp_path / "split"
    _png(root / "HR" / "b.png", 16, 16)
    _png(root / "LR_x4" / "b_lr.png", 4, 4)

    lower = layouts.Layout("lower-case", hr_suffixes=("_hr",), lr_suffixes=("_lr",))
    split = layouts.Layout("split", hr_dir="HR", lr_dir="LR_x{scale}", lr_suffixes=("_lr",))
    *paired, hr_only = layouts.LAYOUTS
    monkeypatch.setattr(layouts, "LAYOUTS", (*paired, lower, split, hr_only))

    name, items = layouts.detect(folder, 4)
    assert name == "lower-case lower" and _names(items) == [("a_hr.png", "a_lr.png")]
    name, items = layouts.detect(root, 4)
    assert name == "split HR + LR_x4" and _names(items) == [("b.png", "b_lr.png")]
    # training finds its data through the same registry
    from adaptsr.adapt import data

    found = data.scan([folder, root], scale=4, patch=8)
    assert found.paired and found.layouts == ["lower-case lower", "split HR + LR_x4"]
    assert [(e.hr.name, e.lr.name) for e in found.entries] == [
        ("a_hr.png", "a_lr.png"),
        ("b.png", "b_lr.png"),
    ]


def test_hr_folders_without_lr_tracks_are_not_div2k(tmp_path):
    # several *_HR subfolders but no LR track: an HR-only folder, not an ambiguous DIV2K root
    root = tmp_path / "mixed"
    (root / "a_HR").mkdir(parents=True)
    (root / "b_HR").mkdir()
    _png(root / "photo.png")
    assert layouts.detect(root, 4)[0] == "HR-only mixed"


def test_drealsr_in_one_folder_and_in_hr_lr_subfolders(tmp_path):
    folder = tmp_path / "drealsr"
    for stem in ("DSC_0001", "DSC_0002"):
        _png(folder / f"{stem}_x1.png", 16, 16)
        _png(folder / f"{stem}_x4.png", 4, 4)
        _png(folder / f"{stem}_x2.png", 8, 8)
    name, items = layouts.detect(folder, 4)
    assert name == "DRealSR-style drealsr"
    assert _names(items) == [
        ("DSC_0001_x1.png", "DSC_0001_x4.png"),
        ("DSC_0002_x1.png", "DSC_0002_x4.png"),
    ]
    assert _names(layouts.detect(folder, 2)[1])[0] == ("DSC_0001_x1.png", "DSC_0001_x2.png")
    # the released tree: Train_x4/train_HR/NAME_x1.png beside Train_x4/train_LR/NAME_x4.png
    root = tmp_path / "Train_x4"
    _png(root / "train_HR" / "a_x1.png", 16, 16)
    _png(root / "train_LR" / "a_x4.png", 4, 4)
    name, items = layouts.detect(root, 4)
    assert name == "HR/LR folders train_HR + train_LR" and _names(items) == [
        ("a_x1.png", "a_x4.png")
    ]


def test_realsr_v2_keeps_three_scales_in_one_folder(tmp_path):
    folder = tmp_path / "Nikon"
    for stem in ("Nikon_001", "Nikon_002"):
        _png(folder / f"{stem}_HR.png", 12, 12)
        for s in (2, 3, 4):
            _png(folder / f"{stem}_LR{s}.png", 12 // s, 12 // s)
    for s in (2, 3, 4):
        name, items = layouts.detect(folder, s)
        assert name == "RealSR-style Nikon"
        assert _names(items) == [(f"Nikon_00{i}_HR.png", f"Nikon_00{i}_LR{s}.png") for i in (1, 2)]
    (folder / "Nikon_002_LR3.png").unlink()
    with pytest.raises(UserError, match=r"1 HR image\(s\) .* e\.g\. Nikon_002_HR\.png"):
        layouts.detect(folder, 3)


def test_flickr2k_root(tmp_path):
    root = tmp_path / "Flickr2K"
    _png(root / "Flickr2K_HR" / "000001.png", 16, 16)
    _png(root / "Flickr2K_LR_bicubic" / "X4" / "000001x4.png", 4, 4)
    name, items = layouts.detect(root, 4)
    assert name == "DIV2K-style Flickr2K_HR + Flickr2K_LR_bicubic/X4"
    assert _names(items) == [("000001.png", "000001x4.png")]


def test_common_lr_suffixes_pair_two_folders(tmp_path):
    hr, lr = tmp_path / "hr", tmp_path / "lr"
    for stem in ("a", "b", "c", "d", "e"):
        _png(hr / f"{stem}.png", 16, 16)
    _png(hr / "f_x1.png", 16, 16)
    for name in ("a_x4", "bX4", "c_LR4", "dLR4", "e", "f_x4"):
        _png(lr / f"{name}.png", 4, 4)
    _, pairs = layouts.pair_folders(hr, lr, 4)
    assert [lr.stem for _, lr in pairs] == ["a_x4", "bX4", "c_LR4", "dLR4", "e", "f_x4"]
    # the same folders as subfolders of one root (lower case)
    assert _names(layouts.detect(tmp_path, 4)[1]) == _names(pairs)


def test_partial_pairing_is_one_error_naming_the_first_unmatched_files(tmp_path):
    hr, lr = tmp_path / "HR", tmp_path / "LR"
    for stem in ("0001", "0002", "0003"):
        _png(hr / f"{stem}.png", 16, 16)
    _png(lr / "0001x4.png", 4, 4)
    _png(lr / "0003x4.png", 4, 4)
    _png(lr / "0002_lr.png", 4, 4)  # a convention no layout knows
    message = (
        r"1 HR image\(s\) without an LR image .*e\.g\. 0002\.png .*"
        r"first LR image without HR: 0002_lr\.png"
    )
    with pytest.raises(UserError, match=message):
        layouts.pair_folders(hr, lr, 4)
    with pytest.raises(UserError, match=message):
        layouts.detect(tmp_path, 4)


def test_train_and_eval_accept_the_same_layouts(tmp_path):
    from adaptsr.adapt import data
    from adaptsr.adapt.evaluate import find_pairs

    drealsr = tmp_path / "drealsr"
    _png(drealsr / "a_x1.png", 16, 16)
    _png(drealsr / "a_x4.png", 4, 4)
    v2 = tmp_path / "v2"
    _png(v2 / "b_HR.png", 16, 16)
    _png(v2 / "b_LR4.png", 4, 4)
    _png(v2 / "b_LR2.png", 8, 8)
    for folder in (drealsr, v2):
        found = data.scan([folder], scale=4, patch=8)
        trained = [(e.hr, e.lr) for e in found.entries]
        evaluated = [(p.hr, p.lr) for p in find_pairs(folder, folder, 4)]
        assert found.paired and trained == evaluated == layouts.detect(folder, 4)[1]
