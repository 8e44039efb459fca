"""The engine sidecar (export/trt_sidecar.py, core/artifacts.py): engines refuse a foreign TensorRT
or GPU, and stale files."""

import pytest
from fakes.exports import write_onnx

from adaptsr.core.artifacts import check_engine_info
from adaptsr.core.errors import UserError
from adaptsr.export.tensorrt import build_engine


def test_sidecar_refuses_foreign_and_stale_engines(tmp_path, fake_trt):
    fake_trt()
    path = write_onnx(tmp_path / "m.onnx", h=32, w=32)
    engine = tmp_path / "m.engine"
    info = build_engine(path, engine, verify=False)
    check_engine_info(info, engine, "10.13.0.35", "8.7")  # as built: accepted
    check_engine_info(info, engine, "10.13.0.99", "8.7")  # the build number does not matter
    with pytest.raises(UserError, match="built with TensorRT 10.13.0.35, this machine has 10.3.0"):
        check_engine_info(info, engine, "10.3.0.30", "8.7")
    with pytest.raises(UserError, match="compute capability 8.7 .*Orin.*this GPU is 9.0"):
        check_engine_info(info, engine, "10.13.0.35", "9.0")
    try:
        check_engine_info(info, engine, "10.13.0.35", "9.0")
    except UserError as e:  # one line that says how to rebuild
        assert "\n" not in str(e) and str(e).endswith(f"{info.build_command} --force")
    engine.write_bytes(engine.read_bytes() + b" ")
    with pytest.raises(UserError, match="not the engine its sidecar .* describes"):
        check_engine_info(info, engine, "10.13.0.35", "8.7")
    engine.write_bytes(engine.read_bytes()[:-1])
    write_onnx(path, h=32, w=32, weight=2.0)  # the ONNX changed after the build
    with pytest.raises(UserError, match="is stale: .*m.onnx changed after the engine was built"):
        check_engine_info(info, engine, "10.13.0.35", "8.7")
