import pytest
import torch

from adaptsr.adapt import train as training
from adaptsr.adapt.train import model as train_model

# One intra-op thread: tiny convs on a busy 2-core machine run several times faster, and the
# subprocesses below use the same count, which bit-exact comparisons need.
pytestmark = pytest.mark.usefixtures("one_thread")


def test_schedules_follow_the_paper():
    def lrs(mode, iters):
        opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1.0)
        cfg = training.TrainConfig(model="m", mode=mode, iters=iters).resolved()
        sched = train_model.make_scheduler(opt, cfg)
        out = []
        for _ in range(iters):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    lora = lrs("lora", 100)  # x0.75 after 50, 75 and 90 iterations
    assert lora[49] == 1.0 and lora[50] == 0.75 and lora[74] == 0.75
    assert lora[75] == pytest.approx(0.75**2) and lora[90] == pytest.approx(0.75**3)
    full = lrs("full", 100)  # halved after 50, 80, 90, 95
    assert [full[i] for i in (49, 50, 80, 90, 95, 99)] == [1, 0.5, 0.25, 0.125, 0.0625, 0.0625]
    cfg = training.TrainConfig(model="m").resolved()
    assert (cfg.lr, cfg.degradation) == (1e-3, "realesrgan")
    cfg = training.TrainConfig(model="m", mode="pretrain").resolved()
    assert (cfg.lr, cfg.degradation) == (2e-4, "bicubic")
