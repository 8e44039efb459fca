"""Mixed training sources: `--data DIR[:WEIGHT[:DEGRADATION]]` repeated, HR-only folders
(degraded on the fly, each by its own degrader) and real pairs in one run, with DRealSR and
RealSR V2 folders among them."""

import json

import cv2
import numpy as np
import pytest
import torch
from fakes.images import write_noise_pngs
from fakes.models import save_tiny_safmn
from fakes.training import logged_losses, resume_copy, tiny_train_config, train_keeping_checkpoints

from adaptsr.adapt import data, lr_batches
from adaptsr.core.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


def _pair(hr_path, lr_path, size=8, scale=4, seed=0):
    lr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    hr_path.parent.mkdir(parents=True, exist_ok=True)
    lr_path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(lr_path), lr)
    cv2.imwrite(str(hr_path), np.kron(lr, np.ones((scale, scale, 1), dtype=np.uint8)))


@pytest.fixture
def sources(tmp_path):
    """An HR-only folder, a DRealSR folder and a RealSR V2 folder (three LR scales)."""
    hr = write_noise_pngs(tmp_path / "hr", 3, 32, 32)
    drealsr = tmp_path / "drealsr"
    for i in range(2):
        _pair(drealsr / f"d{i}_x1.png", drealsr / f"d{i}_x4.png", seed=10 + i)
    v2 = tmp_path / "v2"
    for i in range(2):
        _pair(v2 / f"Canon_00{i}_HR.png", v2 / f"Canon_00{i}_LR4.png", seed=20 + i)
        cv2.imwrite(str(v2 / f"Canon_00{i}_LR2.png"), np.zeros((16, 16, 3), np.uint8))
        cv2.imwrite(str(v2 / f"Canon_00{i}_LR3.png"), np.zeros((11, 11, 3), np.uint8))
    return hr, drealsr, v2


def test_source_specs():
    assert data.parse_source("a/b") == data.Source("a/b")
    assert data.parse_source("a/b:2.5") == data.Source("a/b", 2.5)
    assert data.parse_source("a/b:bicubic") == data.Source("a/b", None, "bicubic")
    assert data.parse_source("a/b:3:realesrgan") == data.Source("a/b", 3.0, "realesrgan")
    assert data.parse_source("c:/x:1") == data.Source("c:/x", 1.0)
    for bad in ("a:0", "a:-1", "a:inf"):
        with pytest.raises(UserError, match="weight must be a positive number"):
            data.parse_source(bad)


def test_scan_of_mixed_sources(sources):
    hr, drealsr, v2 = sources
    found = data.scan([f"{hr}:2:bicubic", str(drealsr), f"{v2}:1"], scale=4, patch=16)
    assert found.mixed and found.weighted and not found.paired
    assert [s.paired for s in found.sources] == [False, True, True]
    assert found.layouts == ["HR-only hr", "DRealSR-style drealsr", "RealSR-style v2"]
    assert [e.source for e in found.entries] == [0, 0, 0, 1, 1, 2, 2]
    v2_lr = [e.lr.name for e in found.entries if e.source == 2]
    assert v2_lr == ["Canon_000_LR4.png", "Canon_001_LR4.png"]
    with pytest.raises(UserError, match="a folder of LR/HR pairs is not degraded"):
        data.scan([f"{drealsr}:bicubic"], scale=4, patch=16)
    # weights: the source's weight (1 when not given) shared by its images
    w = data.sampling_weights(found.entries, found)
    assert w == pytest.approx([0.5 / 3] * 3 + [0.25 / 2] * 2 + [0.25 / 2] * 2)
    assert data.sampling_weights(found.entries, data.scan([hr, drealsr], 4, 16)) is None


def test_weighted_plan_draws_sources_by_weight_and_replays():
    weights = [0.75 / 2] * 2 + [0.25 / 6] * 6  # two sources, 3:1
    plan = data.BatchPlan(8, 4, seed=3, start=0, stop=500, weights=weights)
    drawn = [i for keys in plan for i, _ in keys]
    share = sum(i < 2 for i in drawn) / len(drawn)
    assert abs(share - 0.75) < 0.03  # 2000 draws: 4 standard deviations is 0.039
    later = data.BatchPlan(8, 4, seed=3, start=250, stop=500, weights=weights)
    assert [k for keys in later for k in keys] == [k for keys in plan for k in keys][1000:]


def test_each_source_gets_its_own_degrader_and_pairs_keep_their_lr():
    class Fill:
        def __init__(self, value):
            self.value = value

        def __call__(self, hr):
            return torch.full((hr.shape[0], 3, 2, 2), self.value)

        def state_dict(self):
            return {"value": self.value}

        def load_state_dict(self, state):
            self.value = state["value"]

    degraders = lr_batches.SourceDegraders({0: Fill(0.0), 2: Fill(2.0)})
    pair_lr = torch.full((3, 2, 2), 1.0)
    batch = data.collate_mixed(
        [
            {"hr": torch.zeros(3, 8, 8), "source": 2},
            {"hr": torch.zeros(3, 8, 8), "source": 1, "lr": pair_lr},
            {"hr": torch.zeros(3, 8, 8), "source": 0},
        ]
    )
    lr, degraded = lr_batches.batch_lr(batch, batch["hr"], degraders, "cpu")
    assert degraded == 2 and lr[:, 0, 0, 0].tolist() == [2.0, 1.0, 0.0]
    state = degraders.state_dict()
    other = lr_batches.SourceDegraders({0: Fill(9.0), 2: Fill(9.0)})
    other.load_state_dict(state)
    assert other.state_dict() == state


@pytest.mark.slow
def test_mixed_source_run_trains_and_resumes_exactly(sources, tmp_path, monkeypatch, run_cli):
    hr, drealsr, v2 = sources
    model = save_tiny_safmn(tmp_path / "tiny.safetensors")
    specs = [f"{hr}:2:bicubic", f"{hr}:1", str(drealsr), f"{v2}:1"]
    a = tmp_path / "a"
    cfg = tiny_train_config(model, specs, iters=4, batch=4, degradation="realesrgan")
    result, copies = train_keeping_checkpoints(cfg, a)
    assert result.status == "finished" and (a / "adapter.safetensors").exists()
    logged = [json.loads(x) for x in (a / "log.jsonl").read_text().splitlines()]
    assert any("degrade_per_s" in r for r in logged)  # HR-only images were degraded
    b = tmp_path / "b"
    resume_copy(a, copies[2], b)
    assert logged_losses(b) == {3: logged_losses(a)[3], 4: logged_losses(a)[4]}
    # the command line takes the same specs
    code, out, err = run_cli(
        "train", "--model", model, "--out", tmp_path / "cli", "--iters", "1", "--batch", "2",
        "--patch", "32", "--workers", "0", "--data", f"{hr}:2:bicubic", "--data", f"{drealsr}:1",
    )  # fmt: skip
    assert code == 0, err
    assert "HR-only hr" in out + err and "DRealSR-style drealsr" in out + err
