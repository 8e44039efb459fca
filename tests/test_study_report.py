"""The study table with perceptual metrics: a column for each metric a run was scored with,
mean and std over seeds, '-' for a run without it."""

import pytest

from adaptsr.adapt.study_report import RunOutcome, study_markdown, summarise
from adaptsr.adapt.study_specs import parse_specs


class Settings:
    def flat(self):
        return dict(model="m", data=["d"], val="v", iters=2, batch=2, patch=32,
                    degradation="bicubic", seeds=2)  # fmt: skip


def outcome(spec, seed, psnr, perceptual):
    return RunOutcome(spec, seed, f"{spec}-s{seed}", 10, psnr, 0.9, 60.0, 2, [], perceptual)


def test_perceptual_columns_mean_std_and_missing():
    outcomes = [
        outcome("r1", 0, 30.0, {"haarpsi": 0.6, "ms_gmsd": 0.10}),
        outcome("r1", 1, 31.0, {"haarpsi": 0.8, "ms_gmsd": 0.12}),
        outcome("r4", 0, 30.5, {}),  # scored before the indices existed
        outcome("r4", 1, 30.5, {}),
    ]
    report = summarise(Settings(), parse_specs("r1,r4"), {"psnr_y": 29.0, "ssim_y": 0.8}, outcomes)
    r1, r4 = report["runs"]
    assert r1["haarpsi"] == pytest.approx(0.7) and r1["haarpsi_std"] == pytest.approx(
        0.1414, abs=1e-4
    )
    assert r1["ms_gmsd"] == pytest.approx(0.11)
    assert "haarpsi" not in r4
    text = study_markdown(report)
    head = next(line for line in text.splitlines() if line.startswith("| run |"))
    assert head.split(" | ")[4:6] == ["HaarPSI", "MS-GMSD"]
    row1 = next(line for line in text.splitlines() if line.startswith("| r1 |"))
    row4 = next(line for line in text.splitlines() if line.startswith("| r4 |"))
    assert "0.7000 ± 0.1414" in row1 and "0.1100 ± 0.0141" in row1
    assert row4.count(" - |") >= 2
    assert len(head.split("|")) == len(row1.split("|")) == len(row4.split("|"))
    assert "HaarPSI higher, MS-GMSD lower" in text


def test_no_perceptual_metrics_keeps_the_old_table():
    outcomes = [outcome("r1", 0, 30.0, {})]
    report = summarise(Settings(), parse_specs("r1"), {"psnr_y": 29.0, "ssim_y": 0.8}, outcomes)
    head = next(line for line in study_markdown(report).splitlines() if line.startswith("| run"))
    assert head == (
        "| run | trainable | PSNR-Y (dB) | SSIM-Y | gain (dB) | share of full's gain | "
        "train time | it/s |"
    )
