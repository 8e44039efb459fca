"""Degradation files (adapt/degradation_file.py): presets written as files read back equal, every
key round-trips and changes the settings it names, bad keys, types and ranges are one line
naming the key, and Degrader takes a file, a table or the settings."""

import json
from dataclasses import fields

import pytest
import torch

from adaptsr.adapt import degradation_file as F
from adaptsr.adapt.degradation_params import (
    CAMERA,
    REALESRGAN,
    CameraConfig,
    RealESRGANConfig,
    StageConfig,
)
from adaptsr.adapt.degradations import Degrader
from adaptsr.core.errors import UserError


def write(tmp_path, table, name="deg.toml"):
    path = tmp_path / name
    if name.endswith(".json"):
        path.write_text(json.dumps(table))
    else:
        lines = [f"{k} = {F._toml_value(v)}" for k, v in table.items()]
        path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("name", ["bicubic", "realesrgan", "camera"])
def test_presets_written_as_files_read_back_equal(tmp_path, name):
    path = tmp_path / f"{name}.toml"
    path.write_text(F.to_toml(F.PRESETS[name]))
    assert F.settings_of(str(path)) == F.PRESETS[name]
    assert F.read_file(path) is not None and F.describe(str(path)) == name
    as_json = tmp_path / f"{name}.json"
    as_json.write_text(json.dumps(F.to_table(F.PRESETS[name])))
    assert F.settings_of(as_json) == F.PRESETS[name]


def test_every_field_has_its_key():
    assert {n for n, _ in F.STAGE_KEYS.values()} == {f.name for f in fields(StageConfig)}
    assert set(F.PIPELINE_KEYS.values()) | {"stage1", "stage2"} == {
        f.name for f in fields(RealESRGANConfig)
    }
    assert set(F.CAMERA_KEYS) == {f.name for f in fields(CameraConfig)}


# one changed value per key, each different from the default
REALESRGAN_CHANGES = {
    "kernel_list": ["iso", "plateau_aniso"],
    "kernel_prob": [0.25, 0.75],
    "sinc_prob": 0.3,
    "blur_sigma": [0.5, 2.5],
    "betag_range": [0.6, 3.0],
    "betap_range": [1.0, 1.5],
    "resize_prob": [0.1, 0.8, 0.1],
    "resize_range": [0.5, 1.25],
    "gaussian_noise_prob": 0.9,
    "noise_range": [0.0, 12.5],
    "poisson_scale_range": [0.1, 1.0],
    "gray_noise_prob": 0.0,
    "jpeg_range": [60, 90],
    "kernel_list2": ["aniso"],
    "kernel_prob2": [1.0],
    "sinc_prob2": 0.0,
    "blur_sigma2": [0.3, 0.9],
    "betag_range2": [0.9, 1.1],
    "betap_range2": [1.0, 1.0],
    "resize_prob2": [0.0, 1.0, 0.0],
    "resize_range2": [0.75, 1.0],
    "gaussian_noise_prob2": 1.0,
    "noise_range2": [2.0, 4.0],
    "poisson_scale_range2": [0.0, 0.5],
    "gray_noise_prob2": 1.0,
    "jpeg_range2": [1, 100],
    "kernel_range": [3, 11],
    "second_blur_prob": 0.5,
    "final_sinc_prob": 0.25,
    "final_resize_first_prob": 1.0,
}


@pytest.mark.parametrize("key", sorted(REALESRGAN_CHANGES))
def test_every_realesrgan_key_changes_its_setting_and_round_trips(tmp_path, key):
    table = {"type": "realesrgan", key: REALESRGAN_CHANGES[key]}
    if key.startswith("kernel_list"):
        table["kernel_prob" + key[-1:].strip("t")] = [1 / len(table[key])] * len(table[key])
    if key.startswith("kernel_prob"):
        suffix = key.removeprefix("kernel_prob")
        table["kernel_list" + suffix] = REALESRGAN_CHANGES["kernel_list" + suffix]
    settings = F.settings_of(write(tmp_path, table))
    assert settings != REALESRGAN
    again = tmp_path / "again.toml"
    again.write_text(F.to_toml(settings))
    assert F.settings_of(again) == settings
    assert F.settings_of(F.to_table(settings)) == settings  # the table config.json records


def test_kernel_list_maps_onto_the_six_types(tmp_path):
    table = {
        "type": "realesrgan",
        "kernel_list": ["plateau_aniso", "iso"],
        "kernel_prob": [0.25, 0.75],
    }
    s = F.settings_of(write(tmp_path, table))
    assert s.stage1.kernel_prob == (0.75, 0.0, 0.0, 0.0, 0.0, 0.25)
    assert s.stage2 == REALESRGAN.stage2


def test_realesrgan_values_land_in_their_fields(tmp_path):
    s = F.settings_of(write(tmp_path, {"type": "realesrgan", **REALESRGAN_CHANGES}))
    assert s.stage1.blur_sigma == (0.5, 2.5) and s.stage2.blur_sigma == (0.3, 0.9)
    assert s.stage1.noise_sigma == (0.0, 12.5) and s.stage2.noise_sigma == (2.0, 4.0)
    assert s.stage1.jpeg_quality == (60, 90) and s.stage2.jpeg_quality == (1, 100)
    assert s.stage2.kernel_prob == (0.0, 1.0, 0.0, 0.0, 0.0, 0.0)
    assert s.kernel_sizes == (3, 5, 7, 9, 11)
    assert (s.second_blur_prob, s.final_sinc_prob, s.resize_first_prob) == (0.5, 0.25, 1.0)


def test_camera_keys_and_missing_steps(tmp_path):
    s = F.settings_of(write(tmp_path, {"type": "camera", "blur_sigma": 1.5, "jpeg_quality": 80}))
    assert s == CameraConfig(blur_sigma=1.5, noise_sigma=0.0, jpeg_quality=80)
    # no type: a camera (what `adapt calibrate` writes), its notes table ignored
    path = tmp_path / "cal.toml"
    path.write_text("blur_sigma = 0.8\nnoise_sigma = 3\n\n[calibration]\nphotos = 5\n")
    assert F.settings_of(path) == CameraConfig(0.8, 3.0, None)
    again = tmp_path / "again.toml"
    again.write_text(F.to_toml(F.settings_of(path)))
    assert F.settings_of(again) == CameraConfig(0.8, 3.0, None)


BAD = [
    ({"type": "realesrgan", "kernel_lst": ["iso"]}, "kernel_lst"),
    ({"type": "camera", "noise_range": [1, 2]}, "noise_range"),
    ({"kernel_list": ["iso"]}, 'type = "camera"'),
    ({"type": "bicubic", "blur_sigma": 1.0}, "blur_sigma"),
    ({"type": "gauss"}, "type"),
    ({"type": "realesrgan", "blur_sigma": [3.0, 0.2]}, "blur_sigma"),
    ({"type": "realesrgan", "blur_sigma": [0.0, 1.0]}, "blur_sigma"),
    ({"type": "realesrgan", "blur_sigma2": "wide"}, "blur_sigma2"),
    ({"type": "realesrgan", "noise_range": [-1, 5]}, "noise_range"),
    ({"type": "realesrgan", "sinc_prob": 1.5}, "sinc_prob"),
    ({"type": "realesrgan", "gray_noise_prob2": -0.1}, "gray_noise_prob2"),
    ({"type": "realesrgan", "final_sinc_prob": True}, "final_sinc_prob"),
    ({"type": "realesrgan", "resize_prob": [0.5, 0.6, 0.1]}, "resize_prob"),
    ({"type": "realesrgan", "resize_prob2": [0.5, 0.5]}, "resize_prob2"),
    ({"type": "realesrgan", "resize_range": [1.2, 1.5]}, "resize_range"),
    ({"type": "realesrgan", "betag_range": [1.5, 4.0]}, "betag_range"),
    ({"type": "realesrgan", "kernel_prob": [0.5, 0.5]}, "kernel_prob"),
    ({"type": "realesrgan", "kernel_list": ["iso", "sinc"], "kernel_prob": [0.5, 0.5]}, "sinc"),
    (
        {"type": "realesrgan", "kernel_list2": ["iso", "iso"], "kernel_prob2": [0.5, 0.5]},
        "kernel_list2",
    ),
    ({"type": "realesrgan", "jpeg_range": [0, 95]}, "jpeg_range"),
    ({"type": "realesrgan", "jpeg_range2": [30, 101]}, "jpeg_range2"),
    ({"type": "realesrgan", "jpeg_range": [30.5, 95]}, "jpeg_range"),
    ({"type": "realesrgan", "kernel_range": [7, 23]}, "kernel_range"),
    ({"type": "realesrgan", "kernel_range": [6, 21]}, "kernel_range"),
    ({"type": "camera", "blur_sigma": -0.5}, "blur_sigma"),
    ({"type": "camera", "noise_sigma": "high"}, "noise_sigma"),
    ({"type": "camera", "jpeg_quality": 0}, "jpeg_quality"),
    ({"type": "camera", "jpeg_quality": 75.5}, "jpeg_quality"),
]


@pytest.mark.parametrize(("table", "key"), BAD)
@pytest.mark.parametrize("name", ["deg.toml", "deg.json"])
def test_bad_files_are_one_line_naming_the_key(tmp_path, table, key, name):
    path = write(tmp_path, table, name)
    with pytest.raises(UserError) as e:
        F.settings_of(path)
    message = str(e.value)
    assert "\n" not in message and key in message and str(path) in message


def test_not_a_file_or_preset(tmp_path):
    with pytest.raises(UserError, match="unknown degradation 'realesrgen'"):
        F.settings_of("realesrgen")
    with pytest.raises(UserError, match="no such degradation file"):
        F.settings_of(tmp_path / "missing.toml")
    (tmp_path / "x.toml").write_text("blur_sigma = [")
    with pytest.raises(UserError, match="cannot parse"):
        F.settings_of(tmp_path / "x.toml")
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="table of settings"):
        F.settings_of(tmp_path / "x.json")
    (tmp_path / "x.yaml").write_text("type: camera")
    with pytest.raises(UserError, match=".toml or .json"):
        F.settings_of(tmp_path / "x.yaml")


def test_recorded_keeps_names_and_resolves_files(tmp_path):
    assert F.recorded("camera") == "camera"
    path = write(tmp_path, {"type": "camera", "blur_sigma": 2.0, "noise_sigma": 1.0})
    table = F.recorded(str(path))
    assert table == {"type": "camera", "blur_sigma": 2.0, "noise_sigma": 1.0}
    path.unlink()
    assert F.settings_of(table) == CameraConfig(2.0, 1.0, None)


def test_degrader_takes_a_file_a_table_or_the_settings(tmp_path):
    hr = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "camera.toml"
    path.write_text(F.to_toml(CAMERA))
    expected = Degrader("camera", 4, seed=3)(hr)
    for kind in (str(path), path, F.to_table(CAMERA), CAMERA):
        assert torch.equal(Degrader(kind, 4, seed=3)(hr), expected)
    other = write(
        tmp_path,
        {"type": "camera", "blur_sigma": 2.0, "noise_sigma": 15.0, "jpeg_quality": 75},
        "b.toml",
    )
    assert not torch.equal(Degrader(other, 4, seed=3)(hr), expected)
    rs = write(
        tmp_path, {"type": "realesrgan", "jpeg_range": [90, 90], "jpeg_range2": [90, 90]}, "r.toml"
    )
    deg = Degrader(rs, 4, seed=0)
    assert deg.kind == "realesrgan" and set(deg.sample_params(64)["jpeg1_quality"].tolist()) == {90}


def test_camera_steps_switched_off_by_the_file():
    """blur 0, noise 0, no JPEG: the camera is then exactly the MATLAB bicubic downsample."""
    hr = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    bare = Degrader(CameraConfig(0.0, 0.0, None), 4, seed=0)(hr)
    assert torch.equal(bare, Degrader("bicubic", 4)(hr))
    noisy = Degrader(CameraConfig(0.0, 10.0, None), 4, seed=0)(hr)
    assert 5 / 255 < float((noisy - bare).std()) < 15 / 255


# ---------------------------------------------------------------------------------------------
# a run records the settings: config.json, resume without the file, adapter metadata, --data


@pytest.fixture
def tiny_run(tmp_path):
    from fakes.images import write_noise_pngs
    from fakes.models import one_block_edsr as tiny_edsr

    from adaptsr.adapt.models import save_model

    ckpt = save_model(tiny_edsr(), tmp_path / "tiny.safetensors")
    hr = write_noise_pngs(tmp_path / "hr", 3, 32, 32, seed=3)
    camera = write(tmp_path, {"type": "camera", "blur_sigma": 0.7, "noise_sigma": 4.0})
    return ckpt, hr, camera


def _train(run_cli, ckpt, out, iters, *data_and_more):
    return run_cli(
        "train", "--model", ckpt, "--out", out, "--patch", "16", "--batch", "1",
        "--device", "cpu", "--workers", "0", "--save-every", "1", "--quiet",
        "--iters", iters, *data_and_more,
    )  # fmt: skip


def test_a_run_records_the_file_settings_and_resumes_without_the_file(tiny_run, tmp_path, run_cli):
    from adaptsr.adapt.adapter_file import AdapterFile

    ckpt, hr, camera = tiny_run
    run = tmp_path / "run"
    code, _, err = _train(run_cli, ckpt, run, 1, "--data", hr, "--degradation", camera)
    assert code == 0, err
    table = {"type": "camera", "blur_sigma": 0.7, "noise_sigma": 4.0}
    config = json.loads((run / "config.json").read_text())
    assert config["degradation"] == table
    meta = AdapterFile.read(run / "adapter.safetensors").meta
    assert json.loads(meta.degradation) == table
    assert F.settings_of(json.loads(meta.degradation)) == CameraConfig(0.7, 4.0, None)
    camera.unlink()  # a resume reads the settings from config.json
    (run / "config.json").write_text(json.dumps({**config, "iters": 2}))
    code, _, err = _train(run_cli, ckpt, run, 2, "--data", hr, "--resume")
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["degradation"] == table


def test_a_preset_run_records_its_name(tiny_run, tmp_path, run_cli):
    from adaptsr.adapt.adapter_file import AdapterFile

    ckpt, hr, _ = tiny_run
    run = tmp_path / "run"
    code, _, err = _train(run_cli, ckpt, run, 1, "--data", hr, "--degradation", "bicubic")
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["degradation"] == "bicubic"
    assert AdapterFile.read(run / "adapter.safetensors").meta.degradation == "bicubic"


def test_data_source_takes_a_file(tiny_run, tmp_path, run_cli):
    from adaptsr.adapt import data

    ckpt, hr, camera = tiny_run
    assert data.parse_source(f"{hr}:1:{camera}") == data.Source(str(hr), 1.0, str(camera))
    assert data.parse_source(f"{hr}:{camera}") == data.Source(str(hr), None, str(camera))
    run = tmp_path / "run"
    code, _, err = _train(run_cli, ckpt, run, 1, "--data", f"{hr}:1:{camera}")
    assert code == 0, err
    bad = write(tmp_path, {"type": "camera", "jpeg_quality": 101}, "bad.toml")
    code, _, err = _train(run_cli, ckpt, tmp_path / "r2", 1, "--data", f"{hr}:1:{bad}")
    assert code != 0 and "jpeg_quality" in err and "Traceback" not in err


def test_a_bad_file_is_one_line_from_every_command(tiny_run, tmp_path, run_cli):
    ckpt, hr, _ = tiny_run
    bad = write(tmp_path, {"type": "realesrgan", "noise_range": [5, 1]}, "bad.toml")
    runs = [
        _train(run_cli, ckpt, tmp_path / "run", 1, "--data", hr, "--degradation", bad),
        run_cli("eval", "--model", ckpt, "--hr", hr, "--degradation", bad, "--device", "cpu"),
        run_cli(
            "allocate",
            "--model",
            ckpt,
            "--data",
            hr,
            "--budget",
            "r2",
            "--out",
            tmp_path / "m.json",
            "--degradation",
            bad,
            "--device",
            "cpu",
        ),  # fmt: skip
    ]
    for code, _, err in runs:
        assert code != 0 and "Traceback" not in err, err
        assert "noise_range" in err.strip().splitlines()[-1]
