"""A run records the settings of `--data DIR[:WEIGHT]:FILE` degradation files (config.json's
data_degradations, the adapter's degradation metadata), as it records --degradation FILE: the
settings the file held, not only its path."""

import json

import pytest
from fakes.images import write_noise_pngs
from fakes.models import save_tiny_safmn
from fakes.training import tiny_train_config

from adaptsr.adapt import train as training
from adaptsr.adapt.adapter_file import read_adapter
from adaptsr.adapt.degradation_file import metadata_text
from adaptsr.adapt.train.data_record import source_degradations

CAMERA_FILE = "blur_sigma = 1.25\nnoise_sigma = 7.0\njpeg_quality = 60\n"
CAMERA_TABLE = {"type": "camera", "blur_sigma": 1.25, "noise_sigma": 7.0, "jpeg_quality": 60}


def test_sources_record_their_files_settings(tmp_path):
    cam = tmp_path / "cam.toml"
    cam.write_text(CAMERA_FILE)
    specs = [f"{tmp_path}/a:2:{cam}", f"{tmp_path}/b:bicubic", f"{tmp_path}/c:1"]
    record = source_degradations(specs)
    assert record == {specs[0]: CAMERA_TABLE, specs[1]: "bicubic"}
    cam.write_text("blur_sigma = 3.0\n")  # the record holds the settings read, not the path
    assert record[specs[0]]["blur_sigma"] == 1.25
    assert source_degradations([f"{tmp_path}/c"]) == {}


def test_metadata_text_with_sources():
    assert metadata_text("realesrgan") == "realesrgan"
    assert metadata_text("realesrgan", {}) == "realesrgan"
    mixed = json.loads(metadata_text("realesrgan", {"d:cam.toml": CAMERA_TABLE}))
    assert mixed == {
        "type": "mixed",
        "default": "realesrgan",
        "sources": {"d:cam.toml": CAMERA_TABLE},
    }


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_a_run_records_the_settings_of_its_sources(tmp_path):
    hr = write_noise_pngs(tmp_path / "hr", 3, 32, 32)
    cam = tmp_path / "cam.toml"
    cam.write_text(CAMERA_FILE)
    model = save_tiny_safmn(tmp_path / "tiny.safetensors")
    spec = f"{hr}:2:{cam}"
    cfg = tiny_train_config(model, [spec, f"{hr}:1"], iters=1, save_every=1)
    run = tmp_path / "run"
    assert training.train(cfg, run, progress=False).status == "finished"
    config = json.loads((run / "config.json").read_text())
    assert config["data"] == [spec, f"{hr}:1"]
    assert config["data_degradations"] == {spec: CAMERA_TABLE}
    _, meta = read_adapter(run / "adapter.safetensors")
    recorded = json.loads(meta["degradation"])
    assert recorded == {"type": "mixed", "default": "bicubic", "sources": {spec: CAMERA_TABLE}}
    # the record is a fact of the run: resuming reads config.json back as settings
    assert training.resume_config(run, {}).data == [spec, f"{hr}:1"]
