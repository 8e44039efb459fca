import json

import cv2
import numpy as np
import pytest
import torch
from fakes.images import png_declaring, write_noise_pngs

from adaptsr.adapt import data
from adaptsr.core.errors import UserError
from adaptsr.core.images import read_image


def _texture(h, w, seed):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _write_hr(folder, n=6, size=48, suffix=".png"):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:03d}{suffix}"), _texture(size, size, i))
    return folder


def _write_pair(hr_path, lr_path, h=32, w=40, scale=4, seed=0):
    """LR random, HR its nearest-neighbour x`scale` upsampling: an HR crop is aligned with its
    LR crop exactly when it equals the LR crop upsampled."""
    lr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    cv2.imwrite(str(lr_path), lr)
    cv2.imwrite(str(hr_path), np.kron(lr, np.ones((scale, scale, 1), dtype=np.uint8)))


def test_hr_only_folder_any_format_gives_crops_of_the_file(tmp_path):
    folder = tmp_path / "hr"
    folder.mkdir()
    img = _texture(40, 44, 1)
    cv2.imwrite(str(folder / "a.png"), img)
    cv2.imwrite(str(folder / "b16.png"), img.astype(np.uint16) * 257)  # 16-bit
    cv2.imwrite(str(folder / "c.bmp"), img)
    cv2.imwrite(str(folder / "d.tif"), img)
    cv2.imwrite(str(folder / "e.webp"), img, [cv2.IMWRITE_WEBP_QUALITY, 101])
    cv2.imwrite(str(folder / "f.png"), cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(folder / "g.png"), cv2.cvtColor(img, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(folder / "h.jpg"), img)
    found = data.scan([folder], scale=4, patch=32)
    assert not found.paired and len(found.entries) == 8 and not found.corrupt
    ds = data.CropDataset(found.entries, patch=32, scale=4, flips=False)
    for i, entry in enumerate(found.entries):
        crop = ds[(i, 123)]["hr"]
        assert crop.shape == (3, 32, 32) and crop.dtype == torch.float32
        full = torch.from_numpy(read_image(entry.hr).rgb).permute(2, 0, 1)
        # the crop is a window of the decoded image: find it
        hits = [
            (y, x)
            for y in range(full.shape[1] - 31)
            for x in range(full.shape[2] - 31)
            if torch.equal(full[:, y : y + 32, x : x + 32], crop)
        ]
        assert hits, entry.name


def test_paired_layouts_and_crop_alignment(tmp_path):
    # RealSR V3: NAME_HR / NAME_LR4 in one folder
    realsr = tmp_path / "realsr"
    realsr.mkdir()
    for i in range(3):
        _write_pair(realsr / f"Canon_{i:03d}_HR.png", realsr / f"Canon_{i:03d}_LR4.png", seed=i)
    # DIV2K root: DIV2K_train_HR/0001.png + DIV2K_train_LR_bicubic/X4/0001x4.png
    div2k = tmp_path / "DIV2K"
    (div2k / "DIV2K_train_HR").mkdir(parents=True)
    (div2k / "DIV2K_train_LR_bicubic" / "X4").mkdir(parents=True)
    for i in range(2):
        hr = div2k / "DIV2K_train_HR" / f"{i + 1:04d}.png"
        _write_pair(hr, div2k / "DIV2K_train_LR_bicubic" / "X4" / f"{i + 1:04d}x4.png", seed=9 + i)
    found = data.scan([realsr, div2k], scale=4, patch=64)
    assert found.paired and len(found.entries) == 5
    assert "RealSR" in found.layouts[0] and "DIV2K" in found.layouts[1]
    # --lr-dir / --hr-dir with matching stems
    two = data.scan(
        lr_dir=div2k / "DIV2K_train_LR_bicubic" / "X4", hr_dir=div2k / "DIV2K_train_HR", patch=64
    )
    assert [e.name for e in two.entries] == ["0001", "0002"]

    ds = data.CropDataset(found.entries, patch=64, scale=4, flips=True)
    for i in range(len(ds)):
        for seed in range(6):
            item = ds[(i, seed)]
            lr, hr = item["lr"], item["hr"]
            assert lr.shape == (3, 16, 16) and hr.shape == (3, 64, 64)
            up = lr.repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)
            assert torch.equal(up, hr), "HR crop not aligned with its LR crop"


def test_mixed_sources_and_ambiguous_div2k(tmp_path):
    realsr = tmp_path / "realsr"
    realsr.mkdir()
    _write_pair(realsr / "a_HR.png", realsr / "a_LR4.png")
    hr_only = _write_hr(tmp_path / "hr", n=1)
    found = data.scan([realsr, hr_only], patch=32)  # one run may mix them (tests/test_sources.py)
    assert found.mixed and not found.paired and [e.source for e in found.entries] == [0, 1]
    root = tmp_path / "DIV2K"
    for sub in ("DIV2K_train_HR", "DIV2K_train_LR_bicubic/X4", "DIV2K_train_LR_unknown/X4"):
        (root / sub).mkdir(parents=True)
    with pytest.raises(UserError, match="--lr-dir and --hr-dir"):
        data.scan([root], patch=32)
    with pytest.raises(UserError, match="no images"):
        data.scan([tmp_path / "DIV2K" / "DIV2K_train_HR"], patch=32)


def test_size_mismatch_names_the_file(tmp_path):
    folder = tmp_path / "pairs"
    folder.mkdir()
    _write_pair(folder / "ok_HR.png", folder / "ok_LR4.png")
    cv2.imwrite(str(folder / "bad_HR.png"), _texture(128, 160, 0))
    cv2.imwrite(str(folder / "bad_LR4.png"), _texture(20, 40, 0))
    with pytest.raises(UserError, match="bad_LR4.png: LR 40x20 times 4 does not match HR 160x128"):
        data.scan([folder], patch=32)


def test_corrupt_and_small_images_skipped_with_counts_or_fatal_with_strict(tmp_path):
    folder = _write_hr(tmp_path / "hr", n=3, size=48)
    (folder / "broken.png").write_bytes((folder / "000.png").read_bytes()[:100])  # truncated
    (folder / "text.jpg").write_bytes(b"not an image")
    cv2.imwrite(str(folder / "tiny.png"), _texture(16, 64, 5))
    found = data.scan([folder], patch=32)
    assert len(found.entries) == 3
    assert sorted(p.name for p in found.corrupt) == ["broken.png", "text.jpg"]
    assert [p.name for p in found.too_small] == ["tiny.png"]
    assert "skipped 2 unreadable" in found.summary() and "1 smaller" in found.summary()
    with pytest.raises(UserError, match="broken.png"):
        data.scan([folder], patch=32, strict=True)
    (folder / "broken.png").unlink()
    (folder / "text.jpg").unlink()
    with pytest.raises(UserError, match="tiny.png: 64x16 is smaller than the 32x32"):
        data.scan([folder], patch=32, strict=True)
    with pytest.raises(UserError, match="no usable training images"):
        data.scan([folder], patch=64)


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images in"):
        data.scan([tmp_path / "empty"])
    with pytest.raises(UserError, match="no such folder"):
        data.scan([tmp_path / "missing"])
    with pytest.raises(UserError, match="no training data"):
        data.scan([])


def test_augment_covers_the_eight_symmetries_consistently():
    a = np.arange(12, dtype=np.float32).reshape(3, 4, 1)
    b = a * 10
    seen = set()
    for seed in range(64):
        x, y = data.augment([a, b], np.random.default_rng(seed))
        np.testing.assert_array_equal(y, x * 10)  # same transform on both
        seen.add(x.tobytes() + bytes(x.shape))
    assert len(seen) == 8


def test_batch_plan_epochs_shards_and_resume():
    n, batch = 5, 4
    plan = data.BatchPlan(n, batch, seed=3, start=0, stop=10)
    keys = [k for b in plan for k in b]
    # every epoch visits each image exactly once, in a shuffled order that changes per epoch
    epochs = [sorted(i for i, _ in keys[e * n : (e + 1) * n]) for e in range(len(keys) // n)]
    assert all(e == list(range(n)) for e in epochs)
    orders = {tuple(i for i, _ in keys[e * n : (e + 1) * n]) for e in range(len(keys) // n)}
    assert len(orders) > 1
    assert len({s for _, s in keys}) == len(keys)  # a fresh crop seed per sample
    # the same seed replays; a start offset continues the same sequence
    again = data.BatchPlan(n, batch, seed=3, start=6, stop=10)
    assert [k for b in again for k in b] == keys[6 * batch :]

    # two processes: disjoint halves whose concatenation is the single-process batch
    class D:
        def __init__(self, rank):
            self.rank, self.world = rank, 2

    r0 = list(data.BatchPlan(n, batch, 3, 0, 10, D(0)))
    r1 = list(data.BatchPlan(n, batch, 3, 0, 10, D(1)))
    assert [a + b for a, b in zip(r0, r1, strict=True)] == list(plan)
    with pytest.raises(UserError, match="not divisible"):
        data.BatchPlan(n, 3, 0, 0, 1, D(0))


def test_loader_batches_do_not_depend_on_workers_or_global_rng(tmp_path):
    folder = _write_hr(tmp_path / "hr", n=4, size=40)
    entries = data.scan([folder], patch=32).entries
    ds = data.CropDataset(entries, patch=32, scale=4)

    def batches(workers):
        torch.manual_seed(workers)  # must not matter
        plan = data.BatchPlan(len(ds), 2, seed=1, start=0, stop=3)
        return [b["hr"] for b in data.loader(ds, plan, workers, pin=False)]

    for x, y in zip(batches(0), batches(1), strict=True):
        assert x.shape == (2, 3, 32, 32)
        assert torch.equal(x, y)


def test_validation_split_and_pairs(tmp_path):
    folder = _write_hr(tmp_path / "hr", n=5, size=42)  # 42: modcrop to 40 at x4
    found = data.scan([folder], patch=32)
    train, val = data.split_validation(found, 2)
    assert [e.name for e in train] == ["000", "001", "002"]
    assert [e.name for e in val] == ["003", "004"]
    with pytest.raises(UserError, match="leaves no training images"):
        data.split_validation(found, 5)
    pairs = data.validation_pairs(val, 4, "bicubic", seed=0, device="cpu")
    assert [p[0] for p in pairs] == ["003", "004"]
    assert pairs[0][1].shape == (1, 3, 10, 10) and pairs[0][2].shape == (1, 3, 40, 40)
    again = data.validation_pairs(val, 4, "bicubic", seed=0, device="cpu")
    assert torch.equal(pairs[1][1], again[1][1])


def test_validation_images_must_fit_the_ssim_window(tmp_path):
    # x4: an HR image needs 11 + 2*4 = 19 px to be scored once its border is cropped
    folder = _write_hr(tmp_path / "val", n=2, size=16)
    with pytest.raises(UserError, match="--val .*smaller than the crop"):
        data.validation_entries(folder, scale=4, strict=False)
    _write_hr(tmp_path / "val2", n=2, size=20)
    assert len(data.validation_entries(tmp_path / "val2", scale=4, strict=False)) == 2


def test_scan_sizes_are_upright_and_animations_are_unreadable(tmp_path):
    """A portrait JPEG stored landscape (EXIF Orientation 6) is scanned at the size it is read,
    so crops stay inside it; an animated PNG is skipped, and named with --strict."""
    import io

    from PIL import Image as PILImage

    folder = tmp_path / "hr"
    folder.mkdir()
    exif = PILImage.Exif()
    exif[0x0112] = 6
    PILImage.fromarray(_texture(32, 64, 3)).save(folder / "phone.jpg", exif=exif, quality=95)
    found = data.scan([folder], scale=4, patch=32)
    assert (
        [e.hr_size for e in found.entries] == [(64, 32)] == [read_image(folder / "phone.jpg").size]
    )
    crop = data.CropDataset(found.entries, patch=32, scale=4, flips=False)[(0, 7)]["hr"]
    assert crop.shape == (3, 32, 32)

    frames = [PILImage.fromarray(_texture(48, 48, i)) for i in range(2)]
    moving = io.BytesIO()
    frames[0].save(moving, "PNG", save_all=True, append_images=frames[1:])
    (folder / "moving.png").write_bytes(moving.getvalue())
    found = data.scan([folder], scale=4, patch=32)
    assert [p.name for p in found.corrupt] == ["moving.png"] and len(found.entries) == 1
    with pytest.raises(UserError, match="moving.png: it has 2 frames"):
        data.scan([folder], scale=4, patch=32, strict=True)


@pytest.mark.usefixtures("one_thread", "default_pixel_limit")
def test_declared_huge_image_is_skipped_by_train_allocate_and_eval(edsr_files, tmp_path, run_cli):
    from adaptsr.adapt import data

    folder = write_noise_pngs(tmp_path / "hr", 3, 48, 48, seed=2)
    (folder / "bomb.png").write_bytes(png_declaring(100_000, 100_000))
    found = data.scan([folder], scale=2, patch=16)
    assert [p.name for p in found.corrupt] == ["bomb.png"] and len(found.entries) == 3
    with pytest.raises(UserError, match="bomb.png"):
        data.scan([folder], scale=2, patch=16, strict=True)
    # eval (non-strict): the bomb is skipped with its reason
    report = tmp_path / "r.json"
    code, out, err = run_cli(
        "eval", "--model", edsr_files["ckpt"], "--hr", folder, "--degradation", "bicubic",
        "--report", report, "--no-perceptual", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    skipped = json.loads(report.read_text())["skipped"]
    assert [s["name"] for s in skipped] == ["bomb"] and "megapixels" in skipped[0]["reason"]
