"""Hostile input to `adapt study`'s run specs and loss options: an option given twice in a spec
is refused (not the last silently winning), and a run whose loss needs weights that are not
there is named before the first run trains."""

import numpy as np
import pytest
from fakes.cli import one_line
from fakes.images import write_textured_pngs
from fakes.models import one_block_edsr

from adaptsr.adapt.models import save_model
from adaptsr.adapt.study_specs import parse_spec
from adaptsr.core.errors import UserError


@pytest.mark.parametrize(
    "text, key",
    [
        ("r1@ema=0.9@ema=0.99", "ema"),
        ("r1@loss=l1:1@loss=l1:2", "loss"),
        ("r1@ganstart=1@loss=gan:1@ganstart=2", "ganstart"),
        ("r4@rs@scaling=r", "scaling"),
        ("ra:r8@rmin=0@rmin=1", "rmin"),
        ("difffit@targets=attn@targets=conv", "targets"),
    ],
)
def test_an_option_given_twice_in_a_spec_is_refused(text, key):
    with pytest.raises(UserError, match=f"@{key} is given twice"):
        parse_spec(text)
    assert parse_spec(text.rsplit("@", 1)[0]).options  # once is fine


@pytest.fixture
def study_args(tmp_path):
    model = tmp_path / "edsr.pth"
    save_model(one_block_edsr(), model)
    data = write_textured_pngs(tmp_path / "data", 3, np.random.default_rng(0))
    return [
        "study", "--model", model, "--data", data, "--val", data, "--iters", "1",
        "--batch", "1", "--patch", "16", "--seeds", "1", "--device", "cpu",
        "--degradation", "bicubic", "--quiet",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "runs, weights, words",
    [
        ("r1,r1@loss=l1:1+dists:1", ["--dists-weights", "EMPTY"], "the dists term needs"),
        ("r1,r1@loss=l1:1+perceptual:1", ["--vgg-weights", "EMPTY/vgg19.pth"], "VGG19"),
    ],
)
def test_missing_loss_weights_are_named_before_any_run(
    study_args, tmp_path, run_cli, runs, weights, words
):
    empty = tmp_path / "empty"
    empty.mkdir()
    weights = [w.replace("EMPTY", str(empty)) for w in weights]
    out = tmp_path / "study"
    code, stdout, err = run_cli(*study_args, "--runs", runs, "--out", out, *weights)
    one_line(code, err, f"run spec '{runs.split(',')[1]}'", words)
    assert not out.exists() and "[1/" not in stdout  # r1 did not train first


@pytest.mark.parametrize(
    "text", ["r²", "r1@loss=l1:1+gan:1@ganstart=²", "ra:r8@rmin=³", "ra:r8@rmax=١"]
)
def test_digits_int_refuses_are_one_line_not_an_internal_error(text):
    with pytest.raises(UserError, match="whole number|unknown run spec"):
        parse_spec(text)


@pytest.mark.parametrize(
    "runs, words",
    [
        ("r1,ra:1", "below the"),  # below r_min=1 at every site
        ("r1,ra:10@rmin=4", "r_min=4"),
        ("r1,ra:xyz", "not understood"),
        ("r1,ra:r1000000", "not understood"),
        ("r1,ra:0%", "(0, 100]%"),
    ],
)
def test_a_budget_allocation_refuses_is_named_before_any_run(
    study_args, tmp_path, run_cli, runs, words
):
    out = tmp_path / "study"
    code, stdout, err = run_cli(*study_args, "--runs", runs, "--out", out)
    one_line(code, err, f"run spec '{runs.split(',')[1]}': budget", words)
    assert not out.exists() and "[1/" not in stdout  # r1 did not train first


@pytest.mark.parametrize(
    "runs", ["r1,r1@loss=l1:1+gan:0.1@ganstart=1", "r1,full@loss=gan:1@ganstart=9"]
)
def test_a_gan_start_at_or_past_the_iterations_is_named_before_any_run(
    study_args, tmp_path, run_cli, runs
):
    out = tmp_path / "study"
    code, stdout, err = run_cli(*study_args, "--runs", runs, "--out", out)
    one_line(code, err, f"run spec '{runs.split(',')[1]}'", "is not below --iters 1")
    assert not out.exists() and "[1/" not in stdout
