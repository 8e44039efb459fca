"""The TensorRT backend (adaptsr.serve.backends): batches of tiles up to the profile's max, and an
engine from another TensorRT refused before TensorRT reads it."""

import numpy as np
from fakes.exports import write_onnx
from fakes.tensorrt import GPU

from adaptsr.core.images import Image, synthetic_image, write_image
from adaptsr.export.tensorrt import build_engine
from adaptsr.serve import cudart
from adaptsr.serve.backends import Backend, engine_size_rule


def test_engine_batches_tiles_up_to_the_profile_max():
    rule, fixed, most = engine_size_rule((-1, 3, 64, 64), (1, 3, 64, 64), (8, 3, 64, 64))
    assert fixed is None and most == 8 and rule.static == (64, 64)
    seen = []

    class Engine(Backend):
        max_batch = 8

        def _forward(self, batch):
            seen.append(batch.shape[0])
            return batch

    out = Engine().run(np.zeros((19, 3, 4, 4), np.float32))
    assert seen == [8, 8, 3] and out.shape[0] == 19


def test_backend_refuses_an_engine_from_another_tensorrt(run_cli, tmp_path, fake_trt, monkeypatch):
    fake = fake_trt()
    path = write_onnx(tmp_path / "m.onnx", h=32, w=32)
    engine = tmp_path / "m.engine"
    build_engine(path, engine, verify=False)
    fake.__version__ = "10.3.0.30"  # the Jetson's TensorRT
    loads = fake.calls.count(("deserialize",))
    monkeypatch.setattr(cudart, "device_info", lambda device=None: dict(GPU))
    images = tmp_path / "in"
    images.mkdir()
    write_image(Image(synthetic_image(32, 32).transpose(1, 2, 0), None, 8, False), images / "a.png")
    code, _, err = run_cli("upscale", images, "--out", tmp_path / "out", "--engine", engine)
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"error: {engine} was built with TensorRT 10.13.0.35, this machine")
    assert f"rebuild it on this machine: adapt export trt --onnx {path}" in err
    assert fake.calls.count(("deserialize",)) == loads  # refused before TensorRT read the plan
