"""Training batches (adapt.train.batches): a loader worker's error reaches the user whole."""

import os
import re
import shutil

import pytest
import torch
from fakes.training import tiny_train_config

from adaptsr.adapt import train as training
from adaptsr.core.errors import UserError

# One intra-op thread: tiny convs on a busy 2-core machine run several times faster, and the
# subprocesses below use the same count, which bit-exact comparisons need.
pytestmark = pytest.mark.usefixtures("one_thread")

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _config(safmn_setup, **kw):
    _, model, hr = safmn_setup
    return tiny_train_config(model, **{"data": [str(hr)], **kw})


def test_a_loader_worker_error_is_one_line_naming_the_file(safmn_setup, tmp_path):
    """An image that breaks after the scan fails in a loader process: the error reaching the
    caller is the worker's own UserError line, not PyTorch's traceback text."""
    folder = tmp_path / "hr"
    shutil.copytree(safmn_setup[2], folder)

    class BreakImages(training.Callback):
        def on_start(self, record):  # after the scan, before the first batch is loaded
            for path in folder.glob("*.png"):
                path.write_bytes(b"not an image any more")

    cfg = _config(safmn_setup, data=[str(folder)], workers=1, iters=2)
    with pytest.raises(UserError) as caught:
        training.train(cfg, tmp_path / "run", progress=False, callbacks=[BreakImages()])
    message = str(caught.value)
    assert type(caught.value) is UserError and "\n" not in message, message
    assert re.fullmatch(f"cannot read image {re.escape(str(folder))}/\\d{{3}}\\.png: corrupt or "
                        "not an image", message), message  # fmt: skip


def test_training_batches_carry_a_worker_user_error_whole(tmp_path):
    from adaptsr.adapt.data import BatchPlan, CropDataset
    from adaptsr.adapt.train.batches import LoaderFailure, training_batches

    class Failing(CropDataset):
        def __getitem__(self, key):
            if key[0] == 1:
                raise UserError(f"cannot read image {tmp_path}/1.png: gone")
            return {"hr": torch.full((3, 4, 4), float(key[0]))}

    dataset = Failing([None, None], 4, 1)
    plan = BatchPlan(2, 1, seed=0, start=0, stop=2)
    order = [plan.keys(i)[0][0] for i in range(2)]
    batches = training_batches(dataset, plan, workers=1, pin=False)
    if order[0] == 0:
        assert next(batches)["hr"].shape == (1, 3, 4, 4)
    with pytest.raises(UserError) as caught:
        next(batches)
    assert str(caught.value) == f"cannot read image {tmp_path}/1.png: gone"
    assert LoaderFailure("x").error().args == ("x",)
