"""Hostile weights folders for the dists term (--dists-weights): a missing folder, another
network's file, VGG16 tensors of other shapes, DISTS weights that are not: each one line naming
the file at fault, short enough to read. Loss weights that float() reads but a person would not
('1_0' is ten, digits of other scripts) are refused; '+' joins terms everywhere, as ','."""

import pytest
import torch
from fakes.cli import one_line
from fakes.training import tiny_train_config
from test_dists_loss import write_weights

from adaptsr.adapt.losses.dists import CHANNELS, DISTS_FILE, VGG16_FILE, find_weights, load_dists
from adaptsr.adapt.losses.spec import parse_loss
from adaptsr.adapt.study import StudySettings
from adaptsr.adapt.study_specs import parse_spec
from adaptsr.core.errors import UserError


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dists")
    write_weights(folder)
    return folder


def refusal(folder) -> str:
    with pytest.raises(UserError) as e:
        load_dists(folder)
    text = str(e.value)
    assert "\n" not in text and "\t" not in text and len(text) < 400, text
    return text


def test_a_missing_folder_is_named_as_such(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        find_weights(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="no such folder"):
        find_weights(tmp_path / "file")


def with_vgg(tmp_path, good, state):
    (tmp_path / DISTS_FILE).symlink_to(good / DISTS_FILE)
    torch.save(state, tmp_path / VGG16_FILE)
    return tmp_path


def test_another_networks_file_is_named(tmp_path, good):
    text = refusal(with_vgg(tmp_path, good, {"conv.weight": torch.zeros(1)}))
    assert str(tmp_path / VGG16_FILE) in text and "not torchvision's VGG16 weights" in text


def test_vgg16_tensors_of_other_shapes_are_one_short_line(tmp_path, good):
    state = torch.load(good / VGG16_FILE, weights_only=True)
    state = {k: v[:1] for k, v in state.items()}
    text = refusal(with_vgg(tmp_path, good, state))
    assert str(tmp_path / VGG16_FILE) in text and "not torchvision's VGG16 weights" in text


@pytest.mark.parametrize(
    "learned",
    [
        {"alpha": torch.ones(3)},
        {"alpha": torch.ones(sum(CHANNELS)), "beta": torch.ones(5)},
        {"alpha": torch.ones(sum(CHANNELS)), "beta": torch.full((sum(CHANNELS),), torch.nan)},
        {"alpha": "text", "beta": torch.ones(sum(CHANNELS))},
    ],
)
def test_dists_weights_that_are_not_are_named(tmp_path, good, learned):
    (tmp_path / VGG16_FILE).symlink_to(good / VGG16_FILE)
    torch.save(learned, tmp_path / DISTS_FILE)
    text = refusal(tmp_path)
    assert str(tmp_path / DISTS_FILE) in text and "not DISTS' weights" in text
    assert str(tmp_path / VGG16_FILE) not in text


@pytest.mark.parametrize("weight", ["1_0", "0.1_5", "1e1_0", "\u0661", "\uff11", "1\u0660"])
def test_loss_weights_are_plain_ascii_numbers(weight):
    with pytest.raises(UserError, match=f"weight of gan is not a plain number \\({weight!r}\\)"):
        parse_loss(f"l1:1,gan:{weight}")
    with pytest.raises(UserError, match="run spec .*not a plain number"):
        parse_spec(f"r1@loss=l1:1+gan:{weight}")


def test_plain_weights_still_read_as_before():
    spec = "l1:1.,ff:.5,gan:1e-3,ldl:2.5E+1,perceptual:+2,dists: 3 "
    assert parse_loss(spec) == (
        ("l1", 1.0), ("ff", 0.5), ("gan", 0.001), ("ldl", 25.0), ("perceptual", 2.0),
        ("dists", 3.0),
    )  # fmt: skip


def test_train_refuses_an_underscored_weight(edsr_files, train_hr, tmp_path, run_cli):
    run = tmp_path / "run"
    args = ["train", "--model", edsr_files["ckpt"], "--data", train_hr, "--device", "cpu"]
    code, _, err = run_cli(*args, "--loss", "l1:1_0", "--out", run, "--quiet")
    one_line(code, err, "weight of l1 is not a plain number ('1_0')")
    assert not run.exists()


@pytest.mark.parametrize(
    "spec",
    ["l1:1+gan:0.1+ldl:2", "l1:1,gan:0.1+ldl:2", "L1:1 + GAN:0.1 , ldl:2", "l1+gan:.1+ldl:2"],
)
def test_plus_joins_loss_terms_as_a_comma_does(spec):
    assert parse_loss(spec) == parse_loss("l1:1,gan:0.1,ldl:2")


def test_a_plus_before_digits_is_an_exponent_sign_not_a_join():
    assert parse_loss("l1:1e+1+gan:2.5E+0") == (("l1", 10.0), ("gan", 2.5))
    assert parse_spec("r1@loss=l1:1e+1+gan:1").option("loss") == "l1:10,gan:1"
    with pytest.raises(UserError, match=r"weight of l1 is not a number \('1\+2'\)"):
        parse_loss("l1:1+2")


def test_train_and_study_wide_loss_take_plus(edsr_files, train_hr):
    cfg = tiny_train_config(edsr_files["ckpt"], [str(train_hr)], loss="l1:1+ff:0.5", iters=2)
    assert cfg.resolved().loss == "l1:1,ff:0.5"  # config.json keeps the one spelling
    settings = StudySettings(
        model=str(edsr_files["ckpt"]), data=[str(train_hr)], val=str(train_hr), runs=["r1"],
        loss="l1:1+ff:0.5",
    )  # fmt: skip
    assert settings.checked().loss == "l1:1,ff:0.5"
