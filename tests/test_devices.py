"""One rule for every --device (adapt.devices.pick_device)."""

import pytest
import torch
from fakes.cli import one_line

from adaptsr.core.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_device_names_are_checked_before_any_work(edsr_files, tmp_path, run_cli):
    from adaptsr.adapt.devices import pick_device

    assert pick_device("cpu") == "cpu" and pick_device(None) == pick_device("auto")
    for bad, why in (("nonsense", "unknown device"), ("meta", "unsupported"), ("mps", "unsup")):
        with pytest.raises(UserError, match=why):
            pick_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            pick_device("cuda:0")
    images = edsr_files["images"]
    common = ("--model", edsr_files["ckpt"], "--hr", images, "--degradation", "bicubic", "--quiet")
    one_line(*run_cli("eval", *common, "--device", "meta")[::2], "unsupported device")
    alloc = tmp_path / "ranks.json"
    code, _, err = run_cli(
        "allocate", "--model", edsr_files["ckpt"], "--budget", "r1", "--score", "random",
        "--out", alloc, "--device", "nonsense",
    )  # fmt: skip
    one_line(code, err, "unknown device")
    assert not alloc.exists()
