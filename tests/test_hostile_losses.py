"""Hostile weights folders for the dists term (--dists-weights): a missing folder, another
network's file, VGG16 tensors of other shapes, DISTS weights that are not: each one line naming
the file at fault, short enough to read."""

import pytest
import torch
from test_dists_loss import write_weights

from adaptsr.adapt.losses.dists import CHANNELS, DISTS_FILE, VGG16_FILE, find_weights, load_dists
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
