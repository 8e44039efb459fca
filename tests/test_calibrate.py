"""Calibration from LR-only photos (adapt/calibration/): photos degraded with known settings are
recovered. The photos are made here, independently of the estimators' own camera model: sharp
scenes (antialiased shapes, flat or filled with scikit-image photo texture), scipy's Gaussian
blur, Pillow's bicubic resize, numpy noise, Pillow's libjpeg; one case runs the project's own
camera pipeline (adapt/degradations.py, torch JPEG)."""

import dataclasses
import io
import warnings
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image
from scipy.ndimage import gaussian_filter

from adaptsr.adapt.calibration import (
    RELIABLE_EDGES,
    RELIABLE_FLAT_BLOCKS,
    calibrate,
    evidence_warning,
    to_toml,
    write_calibration,
)
from adaptsr.adapt.calibration.blur import (
    MAX_EDGES,
    MAX_EDGES_LARGE,
    MIXED_SPREAD,
    RESOLVABLE,
    SIGMAS,
    edge_sample,
    interquartile_mean,
    interquartile_uncertainty,
    lower_quartile,
    lower_quartile_uncertainty,
    resolvable_limit,
)
from adaptsr.adapt.calibration.jpeg_quality import estimate_jpeg, quality_from_tables
from adaptsr.adapt.calibration.noise_dct import (
    DETECTABLE,
    LUMA_GAIN,
    ROUNDING,
    detection_limit,
)
from adaptsr.adapt.calibration.photos import load_photos
from adaptsr.adapt.photos import photo
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import tomllib  # tomli on Python 3.10

HR_SIDE = 384
SCALE = 4
TEXTURES = ("astronaut", "coffee", "chelsea")


def textures():
    out = []
    for name in TEXTURES:
        a = getattr(skimage.data, name)()[..., :3]
        half = Image.fromarray(a).resize((a.shape[1] // 2, a.shape[0] // 2), Image.BICUBIC)
        t = np.asarray(half, dtype=np.float64)
        pad = [(0, max(0, HR_SIDE - t.shape[0])), (0, max(0, HR_SIDE - t.shape[1])), (0, 0)]
        out.append(np.pad(t, pad, mode="reflect"))  # at least HR_SIDE on each side
    return out


def sharp_scene(seed: int, side: int = HR_SIDE, soft: float = 0.0) -> np.ndarray:
    """HR scene with ideal (pixel-integrated) edges: 30 ellipses and polygons over a gradient,
    half flat-coloured, half filled with photo texture; with `soft`, that share of the shapes
    has its outline blurred by a Gaussian of 2-6 HR pixels (defocused objects, shading)."""
    rng = np.random.default_rng(seed)
    n = side * 4  # 4x4 supersampling
    yy, xx = np.mgrid[0:side, 0:side] / side
    img = np.stack([60 + 100 * xx, 80 + 60 * yy, 120 + 40 * xx * yy], -1)
    tex = textures()
    for k in range(30):
        mask = np.zeros((n, n), np.uint8)
        cx, cy = (int(v) for v in rng.integers(0, n, 2))
        r = int(rng.uniform(0.05, 0.25) * n)
        if rng.random() < 0.5:
            axes = (r, int(r * rng.uniform(0.4, 1)))
            cv2.ellipse(mask, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
        else:
            pts = np.array([cx, cy]) + rng.normal(0, r, (int(rng.integers(3, 6)), 2))
            cv2.fillPoly(mask, [pts.astype(np.int32)], 255)
        m = cv2.resize(mask.astype(np.float32) / 255, (side, side), interpolation=cv2.INTER_AREA)
        if soft and rng.random() < soft:
            m = gaussian_filter(m, rng.uniform(2.0, 6.0))
        if rng.random() < 0.5:
            fill = np.full((side, side, 3), rng.uniform(15, 240, 3))
        else:
            t = tex[k % len(tex)]
            oy, ox = rng.integers(0, t.shape[0] - side + 1), rng.integers(0, t.shape[1] - side + 1)
            fill = t[oy : oy + side, ox : ox + side]
        img = img * (1 - m[..., None]) + fill * m[..., None]
    return np.clip(img, 0, 255)


def degrade(hr, blur, noise, seed, scale=SCALE):
    """blur (scipy) -> Pillow bicubic down -> Gaussian noise -> 8 bits."""
    if blur > 0:
        hr = np.stack([gaussian_filter(hr[..., c], blur, truncate=3) for c in range(3)], -1)
    h, w = hr.shape[:2]
    planes = [
        Image.fromarray(hr[..., c].astype(np.float32), "F").resize(
            (w // scale, h // scale), Image.BICUBIC
        )
        for c in range(3)
    ]
    lr = np.stack([np.asarray(p, dtype=np.float64) for p in planes], -1)
    lr += np.random.default_rng(seed).normal(0, noise, lr.shape)
    return np.clip(np.round(lr), 0, 255).astype(np.uint8)


def write_photos(folder, blur, noise, quality, seed, png=False, count=3, soft=0.0):
    """Photos of the camera: JPEG files (or PNGs of the JPEG-decoded pixels with png=True)."""
    paths = []
    for i in range(count):
        scene = sharp_scene(seed * 10 + i, soft=soft)
        lr = Image.fromarray(degrade(scene, blur, noise, seed * 10 + i))
        if quality is None:
            path = folder / f"p{i}.png"
            lr.save(path)
        elif png:
            buf = io.BytesIO()
            lr.save(buf, "JPEG", quality=quality)
            path = folder / f"p{i}.png"
            Image.open(buf).convert("RGB").save(path)
        else:
            path = folder / f"p{i}.jpg"
            lr.save(path, "JPEG", quality=quality)
        paths.append(path)
    return paths


def noise_ok(estimate, true):
    return abs(estimate - true) <= max(0.1 * true, 0.5)


@pytest.mark.parametrize("quality", [30, 50, 75, 95])
def test_jpeg_quality_from_tables_is_exact(tmp_path, quality):
    paths = write_photos(tmp_path, 1.0, 5, quality, seed=quality)
    est = estimate_jpeg(load_photos(paths))
    assert (est.quality, est.uncertainty, est.method) == (quality, 0.0, "tables")
    assert est.subsampling == "420"


def test_foreign_tables_get_the_nearest_quality_and_an_uncertainty():
    q, unc = quality_from_tables(((20,) * 64, (30,) * 64))
    assert 1 <= q <= 100 and unc >= 1


@pytest.mark.parametrize("quality", [40, 85])
def test_jpeg_quality_from_decoded_pixels(tmp_path, quality):
    est = estimate_jpeg(load_photos(write_photos(tmp_path, 1.0, 10, quality, 7, png=True)))
    assert est.method == "pixels" and abs(est.quality - quality) <= 1


def test_no_jpeg_is_reported_as_none(tmp_path):
    est = estimate_jpeg(load_photos(write_photos(tmp_path, 1.0, 10, None, 8)))
    assert est.quality is None and est.method == "none"


# (blur, noise, JPEG quality): across blur 0.5-3, noise 0-25, JPEG 30-95 and none.
RECOVERED = [
    (0.5, 0.0, None),
    (2.0, 0.0, None),
    (1.0, 10.0, None),
    (3.0, 25.0, None),
    (2.0, 15.0, 75),
    (1.5, 10.0, 95),
    (2.5, 25.0, 50),
    (1.0, 25.0, 30),
]


@pytest.mark.parametrize(("blur", "noise", "quality"), RECOVERED)
def test_calibration_recovers_known_settings(tmp_path, blur, noise, quality):
    c = calibrate(write_photos(tmp_path, blur, noise, quality, seed=int(blur * 10 + noise)), 4)
    assert c.jpeg.quality == quality
    assert noise_ok(c.noise.sigma, noise), c.report()
    if (blur, noise, quality, int(blur * 10 + noise)) not in BLUR_CORNERS:
        assert abs(c.blur.sigma - blur) <= 0.25, c.report()
    assert c.blur.images == c.noise.images == 3 and c.blur.regions > 100 and c.noise.regions > 10


# Blur under noise and JPEG, other seeds than above: the edge fits are not biased by the noise.
BLUR_UNDER_NOISE = [
    (1.0, 10.0, None, 1),
    (3.0, 25.0, None, 2),
    (3.0, 5.0, 95, 3),
    (2.0, 5.0, 95, 4),
    (0.5, 15.0, 30, 3),
    (1.0, 25.0, 30, 4),
    (2.0, 25.0, 50, 3),
    (2.5, 25.0, 75, 4),
    (3.0, 15.0, 50, 3),
    (1.0, 5.0, None, 4),
    (2.0, 0.0, 30, 3),
    (1.5, 10.0, 75, 4),  # a corner (+0.28) until the DCT noise chose flat blocks over all photos
]


@pytest.mark.slow
@pytest.mark.parametrize(("blur", "noise", "quality", "seed"), BLUR_UNDER_NOISE)
def test_blur_under_noise(tmp_path, blur, noise, quality, seed):
    c = calibrate(write_photos(tmp_path, blur, noise, quality, seed=seed), 4)
    assert abs(c.blur.sigma - blur) <= 0.25, c.report()


# Noise under JPEG, where the compression removed it from the high frequencies: read from the
# low-frequency DCT coefficients that let it through (other seeds than RECOVERED's).
NOISE_UNDER_JPEG = [(1.0, 5.0, 50, 3), (0.5, 5.0, 75, 4), (1.0, 15.0, 75, 3), (0.5, 15.0, 30, 3)]


@pytest.mark.parametrize(("blur", "noise", "quality", "seed"), NOISE_UNDER_JPEG)
def test_noise_under_jpeg(tmp_path, blur, noise, quality, seed):
    c = calibrate(write_photos(tmp_path, blur, noise, quality, seed=seed), 4)
    assert noise_ok(c.noise.sigma, noise), c.report()
    assert not c.noise.hidden and c.noise.detection_limit < noise, c.report()


# Little or no noise under strong JPEG: the compression leaves no trace of it (at quality 30 a
# noise of 5 leaves about one low-frequency index in a thousand nonzero, as the faint texture
# of flat blocks does without noise), so no estimate can tell it from none: the calibration
# reports the limit below which noise is invisible and that its reading is at it.
HIDDEN = [(2.0, 2.0, 30, 3), (1.0, 0.0, 50, 3), (3.0, 5.0, 30, 4), (1.5, 2.0, 50, 5)]


@pytest.mark.parametrize(("blur", "noise", "quality", "seed"), HIDDEN)
def test_noise_under_the_detection_limit_is_reported(tmp_path, blur, noise, quality, seed):
    c = calibrate(write_photos(tmp_path, blur, noise, quality, seed=seed), 4)
    assert noise <= c.noise.detection_limit and c.noise.hidden, c.report()
    assert f"detection limit of {c.noise.detection_limit:.2f}" in c.report().splitlines()[1]
    limit = tomllib.loads(to_toml(c))["calibration"]["noise_detection_limit"]
    assert limit == pytest.approx(c.noise.detection_limit, abs=1e-4)
    # too few flat blocks for any noise to show: said in words, not as a limit of inf
    none = dataclasses.replace(c, noise=dataclasses.replace(c.noise, detection_limit=np.inf))
    line = none.report().splitlines()[1]
    assert "unreadable: too few flat blocks" in line and "inf" not in line, line
    assert tomllib.loads(to_toml(none))["calibration"]["noise_detection_limit"] == 255.0


@pytest.mark.parametrize("steps", [(17.0,) * 1800, (5.0,) * 300 + (10.0,) * 900])
def test_detection_limit_is_where_noise_shows_in_the_indices(steps):
    """At the limit, Gaussian noise quantised with these steps leaves DETECTABLE nonzero
    indices on average, by simulation (a second implementation); a fifth lower, far fewer."""
    steps = np.array(steps)
    limit = detection_limit(steps)
    luma_sigma = np.sqrt(limit**2 * LUMA_GAIN + ROUNDING)
    rng = np.random.default_rng(0)
    for factor, expected in ((1.0, DETECTABLE), (0.8, None)):
        c = rng.normal(0.0, factor * luma_sigma, (2000, len(steps)))
        nonzero = np.count_nonzero(np.round(c / steps), axis=1).mean()
        if expected:  # the grid of sigmas tried is 1.8% apart
            assert expected <= nonzero <= 1.25 * expected
        else:
            assert nonzero < 0.5 * DETECTABLE


# The corners the blur misses (docs/degradations.md, "Calibration"; measured errors in
# brackets): the smallest blur under the strongest noise, and strong noise under JPEG, where
# few edges are clean enough to fit. The first is under the resolvable limit and reported so
# (UNRESOLVED); the estimate itself still misses.
BLUR_CORNERS = [(0.5, 25.0, 95, 4), (2.5, 25.0, 50, 50)]  # +0.61 -0.38


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="these corners miss the blur target by 0.1-0.4")
@pytest.mark.parametrize(("blur", "noise", "quality", "seed"), BLUR_CORNERS)
def test_blur_corners(tmp_path, blur, noise, quality, seed):
    c = calibrate(write_photos(tmp_path, blur, noise, quality, seed=seed), 4)
    assert abs(c.blur.sigma - blur) <= 0.25, c.report()


def test_interquartile_uncertainty_is_the_scatter_of_the_interquartile_mean():
    """The standard error formula against a simulation: skewed widths like the fits' (a
    gamma), 300 edges, the interquartile mean's spread over 2000 draws."""
    rng = np.random.default_rng(0)
    draws = rng.gamma(4.0, 0.12, (2000, 300))
    scatter = np.std([interquartile_mean(w) for w in draws])
    predicted = np.mean([interquartile_uncertainty(w) for w in draws[:200]])
    assert predicted == pytest.approx(scatter, rel=0.1)


@pytest.mark.parametrize(("w0", "gain", "edges"), [(0.35, 0.12, 600), (0.6, 0.08, 150)])
def test_resolvable_limit_is_where_the_widths_part(w0, gain, edges):
    """A curve of widths adding in quadrature, w(s) = sqrt(w0^2 + (gain s)^2), and photos'
    edge widths scattered around it (simulated): the limit is the closed-form solution of
    w(L) - w(0) = RESOLVABLE u (up to the grid's linear interpolation); photos blurred by the
    limit read wider than sharp ones by RESOLVABLE times their simulated scatter; at twice
    the limit, clearly more."""
    width = lambda s: np.sqrt(w0**2 + (gain * s) ** 2)  # noqa: E731
    rng = np.random.default_rng(1)
    sharp = rng.normal(width(0.0), 0.1, (400, edges))
    u = np.mean([interquartile_uncertainty(w) for w in sharp])
    limit = resolvable_limit(width(SIGMAS), u)
    exact = np.sqrt((w0 + RESOLVABLE * u) ** 2 - w0**2) / gain
    assert limit == pytest.approx(exact, rel=0.1)
    scatter = np.std([interquartile_mean(w) for w in sharp])
    for sigma, lo, hi in ((limit, 1.6, 2.5), (2 * limit, 5.0, np.inf)):
        draws = rng.normal(width(sigma), 0.1, (400, edges))
        parted = (np.mean([interquartile_mean(w) for w in draws]) - width(0.0)) / scatter
        assert lo <= parted <= hi, parted


# Blur under the resolvable limit: 0.5 HR pixels at x4 (0.125 LR pixels) under strong noise or
# JPEG widens the edges by less than two uncertainties of the width, so the photos cannot tell
# it from none; the calibration reports that limit and that its reading is at it (measured
# errors in brackets).
UNRESOLVED = [(0.5, 15.0, 30, 4), (0.5, 25.0, 95, 4)]  # +0.55 +0.61


@pytest.mark.parametrize(("blur", "noise", "quality", "seed"), UNRESOLVED)
def test_blur_under_the_resolvable_limit_is_reported(tmp_path, blur, noise, quality, seed):
    c = calibrate(write_photos(tmp_path, blur, noise, quality, seed=seed), 4)
    assert blur <= c.blur.resolvable_limit and c.blur.unresolved, c.report()
    line = c.report().splitlines()[0]
    assert f"resolvable limit of {c.blur.resolvable_limit:.2f}" in line, line
    limit = tomllib.loads(to_toml(c))["calibration"]["blur_resolvable_limit"]
    assert limit == pytest.approx(c.blur.resolvable_limit, abs=1e-4)


def test_clean_photos_resolve_blur_from_one_hr_pixel(tmp_path):
    """No noise, no JPEG: the limit is where the bicubic kernel alone hides blur (0.64 HR
    pixels at x4 measured), a blur of 1 is read within 0.25 and not reported as unresolved."""
    c = calibrate(write_photos(tmp_path, 1.0, 0.0, None, seed=3), 4)
    assert 0 < c.blur.resolvable_limit < 0.75 and not c.blur.unresolved, c.report()
    assert abs(c.blur.sigma - 1.0) <= 0.25 and "resolvable" not in c.report(), c.report()
    assert not c.blur.soft_scene and "narrower" not in c.report(), c.report()


# A soft scene: half the shapes defocused (outlines blurred by 2-6 HR pixels before the camera's
# blur). Their edges widen the interquartile mean (it read +1.21 and +0.57 here), not the
# narrowest edges, which only the camera's blur sets. Made after MIXED_SPREAD was fixed.
SOFT_SCENES = [(1.0, 5.0, 90, 4), (3.0, 0.0, 95, 4)]  # +0.15 +0.08


@pytest.mark.parametrize(("blur", "noise", "quality", "seed"), SOFT_SCENES)
def test_soft_scene_is_read_from_the_narrower_edges(tmp_path, blur, noise, quality, seed):
    c = calibrate(write_photos(tmp_path, blur, noise, quality, seed=seed, soft=0.5), 4)
    assert c.blur.soft_scene and abs(c.blur.sigma - blur) <= 0.25, c.report()
    assert "read from the narrower edges" in c.report().splitlines()[0], c.report()
    spread = tomllib.loads(to_toml(c))["calibration"]["blur_edge_spread"]
    assert spread == pytest.approx(c.blur.spread, abs=1e-4) and spread >= MIXED_SPREAD


def test_large_photos_give_enough_edges(tmp_path):
    """Large photos are sampled for edges in proportion to their size: with MAX_EDGES
    candidates per photo, three photos of any size stopped at a few hundred clean edges and
    calibrate told them to be larger. Scenes of 8 x 8 sharp scenes (their seams are edges of the
    scene too), 768 x 768 LR."""
    assert edge_sample(96 * 96) == MAX_EDGES and edge_sample(3000 * 2000) == MAX_EDGES_LARGE
    paths = []
    for i in range(3):
        hr = np.tile(sharp_scene(60 + i), (8, 8, 1))
        paths.append(tmp_path / f"big{i}.jpg")
        Image.fromarray(degrade(hr, 1.5, 5.0, seed=60 + i)).save(paths[-1], quality=90)
    c = calibrate(paths, 4)
    assert c.blur.regions >= RELIABLE_EDGES and c.warning is None, c.report()
    assert abs(c.blur.sigma - 1.5) <= 0.25 and noise_ok(c.noise.sigma, 5.0), c.report()


@pytest.mark.parametrize("quality", [None, 95])
def test_noise_replays_on_a_window_of_a_large_photo(tmp_path, monkeypatch, quality):
    """Photos over REPLAY_SIDE have their replays run on the window with the most flat blocks:
    the estimate is the one replays on the whole photo give (photos of 1,344 x 1,344: LR
    scenes tiled, each with its noise)."""
    from adaptsr.adapt.calibration import noise

    paths = []
    for i in range(3):
        lr = np.tile(degrade(sharp_scene(70 + i), 1.0, 6.0, seed=70 + i), (14, 14, 1))
        paths.append(tmp_path / f"w{i}.{'jpg' if quality else 'png'}")
        Image.fromarray(lr).save(paths[-1], **({"quality": quality} if quality else {}))
    photos = load_photos(paths)
    assert min(p.rgb.shape[0] for p in photos) > noise.REPLAY_SIDE
    jpeg = estimate_jpeg(photos)
    windowed = noise.estimate_noise(photos, jpeg)
    monkeypatch.setattr(noise, "REPLAY_SIDE", 10**6)
    whole = noise.estimate_noise(photos, jpeg)
    assert windowed.sigma == pytest.approx(whole.sigma, rel=0.03)
    assert noise_ok(windowed.sigma, 6.0)


def test_the_replay_window_holds_the_flat_blocks_wherever_they_are():
    """Flat blocks only in the last pixels of a photo just over REPLAY_SIDE (past the
    128-pixel steps) are in the window; with none inside any window the whole photo is
    replayed."""
    from adaptsr.adapt.calibration.noise import REPLAY_SIDE, replay_window

    rgb = np.zeros((1100, 1100, 3))
    blocks = np.array([[r, c] for r in range(60, 70) for c in range(129, 134)])  # x 1032-1071
    rows, cols = replay_window(rgb, blocks)
    assert cols.stop - cols.start == REPLAY_SIDE and cols.start % 16 == 0
    assert cols.start + 8 <= 129 * 8 and cols.stop - 8 >= 133 * 8 + 8
    assert replay_window(rgb, np.zeros((0, 2), dtype=int)) == (slice(0, 1100), slice(0, 1100))


def test_lower_quartile_uncertainty_is_its_scatter():
    """The lower quartile's standard error against a simulation, as the interquartile mean's."""
    rng = np.random.default_rng(0)
    draws = rng.gamma(4.0, 0.12, (2000, 300))
    scatter = np.std([lower_quartile(w) for w in draws])
    predicted = np.mean([lower_quartile_uncertainty(w) for w in draws[:200]])
    assert predicted == pytest.approx(scatter, rel=0.1)


def test_the_camera_pipeline_is_recovered(tmp_path):
    """The project's own camera (MATLAB resize, torch JPEG), written as PNG."""
    torch = pytest.importorskip("torch")
    from adaptsr.adapt.degradation_params import CameraConfig
    from adaptsr.adapt.degradations import apply_camera, quantize8

    cam = CameraConfig(blur_sigma=1.5, noise_sigma=12.0, jpeg_quality=70)
    hr = torch.tensor(np.stack([sharp_scene(40 + i) for i in range(3)]) / 255).permute(0, 3, 1, 2)
    lr = quantize8(apply_camera(hr.float(), 4, torch.Generator().manual_seed(0), cam))
    paths = []
    for i, img in enumerate(lr):
        paths.append(tmp_path / f"c{i}.png")
        arr = np.round(img.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        Image.fromarray(arr).save(paths[-1])
    c = calibrate(paths, 4)
    assert abs(c.jpeg.quality - 70) <= 1
    assert noise_ok(c.noise.sigma, 12.0), c.report()
    assert abs(c.blur.sigma - 1.5) <= 0.25, c.report()


def test_toml_has_the_presets_keys_and_the_report(tmp_path):
    c = calibrate(write_photos(tmp_path, 1.0, 10.0, 75, seed=5), 4)
    out = write_calibration(c, tmp_path / "camera.toml")
    data = tomllib.loads(out.read_text())
    assert data["jpeg_quality"] == 75
    assert data["blur_sigma"] == pytest.approx(c.blur.sigma, abs=1e-4)
    assert data["noise_sigma"] == pytest.approx(c.noise.sigma, abs=1e-4)
    cal = data["calibration"]
    assert cal["scale"] == 4 and cal["photos"] == 3 and cal["jpeg_method"] == "tables"
    assert cal["noise_flat_blocks"] == c.noise.regions and len(cal["noise_variance_a"]) == 3
    assert "blur sigma" in c.report() and "JPEG quality: 75" in c.report()
    with pytest.raises(UserError, match="already exists"):
        write_calibration(c, out)


def test_no_jpeg_leaves_the_quality_out(tmp_path):
    c = calibrate(write_photos(tmp_path, 1.0, 5.0, None, seed=6), 4)
    data = tomllib.loads(to_toml(c))
    assert "jpeg_quality" not in data and data["calibration"]["jpeg_method"] == "none"
    assert "no sign of JPEG" in c.report()


def test_too_few_photos(tmp_path):
    with pytest.raises(UserError, match="at least 3 photos") as e:
        calibrate(write_photos(tmp_path, 1.0, 5, 75, 1, count=2), 4)
    assert "\n" not in str(e.value)


def test_too_small_photos(tmp_path):
    paths = write_photos(tmp_path, 1.0, 5, 75, 1)
    Image.new("RGB", (40, 60), (90, 90, 90)).save(paths[0])
    with pytest.raises(UserError, match="too small") as e:
        calibrate(paths, 4)
    assert "\n" not in str(e.value)


def test_too_uniform_photos(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        flat = np.clip(120 + 10 * i + rng.normal(0, 3, (96, 96, 3)), 0, 255).astype(np.uint8)
        paths.append(tmp_path / f"f{i}.png")
        Image.fromarray(flat).save(paths[-1])
    with pytest.raises(UserError, match="too uniform") as e:
        calibrate(paths, 4)
    assert "\n" not in str(e.value)


def test_constant_photos_get_one_line_and_no_warning(tmp_path):
    """A photo of one level has no JPEG blocks to find (0/0) and nothing to read: one line."""
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"c{i}.png")
        Image.fromarray(np.full((200, 300, 3), 90 + 40 * i, dtype=np.uint8)).save(paths[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(UserError) as e:
            calibrate(paths, 4)
    assert "\n" not in str(e.value)


def test_scale_1_reads_without_undefined_widths(tmp_path):
    """At x1 strong candidate blurs leave the reference two clean edges, whose interquartile
    mean was undefined (NaN carried up the curve, with numpy's warnings): now their median."""
    assert interquartile_mean(np.array([0.4, 0.6])) == pytest.approx(0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        c = calibrate(write_photos(tmp_path, 1.0, 3.0, None, seed=3), 1)
    assert np.isfinite([c.blur.sigma, c.blur.resolvable_limit]).all(), c.report()


def test_a_noise_reading_at_the_top_of_the_dct_grid_is_not_taken(monkeypatch):
    """Edges among the flattest blocks can drive the DCT reading to its grid's largest sigma
    (89.7, +- 0): the pixel estimate is kept instead."""
    from adaptsr.adapt.calibration import noise

    pixels = noise.NoiseEstimate(3.0, 0.2, 3, 100, (3.0, 3.0, 3.0), ((9.0, 0.0),) * 3)
    monkeypatch.setattr(
        noise, "estimate_noise_dct", lambda *_: (noise.SIGMA_Y_TOP, 0.0, 500, 3, 1.0)
    )
    assert noise._from_coefficients(pixels, [], None) is pixels
    monkeypatch.setattr(noise, "estimate_noise_dct", lambda *_: (5.0, 0.3, 500, 3, 1.0))
    assert noise._from_coefficients(pixels, [], None).sigma == 5.0


def test_large_photos_short_of_evidence_are_not_called_small(tmp_path):
    c = calibrate(write_photos(tmp_path, 1.0, 10.0, 75, seed=5), 4)
    large = [SimpleNamespace(rgb=np.zeros((600, 800, 3)))] * 3
    line = evidence_warning(large, c.blur, dataclasses.replace(c.noise, regions=4))
    assert "short of flat regions or clean edges" in line and "600-600 px" in line
    assert "too small" not in line and "larger" not in line
    assert "too small" in c.warning and "more or larger photos" in c.warning


def test_bad_scale():
    with pytest.raises(UserError, match="scale"):
        calibrate([], 0)


# Real photos that ship with scikit-image and matplotlib (the demo's held-out five, 75-160 LR
# pixels a side at x4), degraded here with known settings. Their own edges are not ideal steps
# and some are textured all over (a cat's fur), so the tolerance is the one measured on them
# (docs/degradations.md, "Calibration"): their edges spread as a soft scene's, the blur is read
# from the narrower ones and reads 0.3-0.7 HR pixels high (the whole interquartile mean read
# 0.9-1.8 high), noise within 25% (0.5 level), JPEG exact; and they are small enough that
# calibrate warns.
REAL_PHOTOS = ("astronaut", "chelsea", "coffee", "grace_hopper", "rocket")
ON_REAL_PHOTOS = [(1.6, 8.0, 60), (1.0, 4.0, 80), (2.2, 15.0, None)]


def write_real_photos(folder, blur, noise, quality):
    """The real photos through the camera: JPEG files at `quality`, or PNGs with None."""
    paths = []
    for i, name in enumerate(REAL_PHOTOS):
        lr = Image.fromarray(degrade(photo(name).astype(np.float64), blur, noise, seed=i))
        paths.append(folder / f"{name}.{'jpg' if quality else 'png'}")
        lr.save(paths[-1], quality=quality) if quality else lr.save(paths[-1])
    return paths


@pytest.mark.parametrize(("blur", "noise", "quality"), ON_REAL_PHOTOS)
def test_real_photos(tmp_path, blur, noise, quality):
    c = calibrate(write_real_photos(tmp_path, blur, noise, quality), 4)
    assert c.jpeg.quality == quality
    assert c.blur.soft_scene and -0.25 <= c.blur.sigma - blur <= 0.75, c.report()
    assert abs(c.noise.sigma - noise) <= max(0.25 * noise, 0.5), c.report()
    assert c.warning and "too small" in c.report().splitlines()[-1]


def test_no_warning_with_enough_evidence(tmp_path):
    c = calibrate(write_photos(tmp_path, 1.0, 10.0, 75, seed=5), 4)
    assert c.warning and "\n" not in c.warning  # three 96 x 96 photos are few
    blur = dataclasses.replace(c.blur, regions=RELIABLE_EDGES)
    noise = dataclasses.replace(c.noise, regions=RELIABLE_FLAT_BLOCKS)
    assert (
        evidence_warning(load_photos(write_photos(tmp_path, 1.0, 10.0, 75, 5)), blur, noise) is None
    )
    assert "warning" not in to_toml(dataclasses.replace(c, warning=None))
    assert "# warning: the photos are too small" in to_toml(c)
