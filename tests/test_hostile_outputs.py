"""Outputs that cannot be written (issue 29): a symbolic link loop, a broken link, a path under
a regular file: one line with the reason, before any work; outputs among the inputs: one rule."""

import os
import re

import cv2
import numpy as np
import pytest
from fakes.exports import nearest_x2_onnx

from adaptsr.core.errors import UserError
from adaptsr.core.fileio import (
    check_output_folder,
    check_outside_inputs,
    check_writable,
    remove_stale_partials,
)
from adaptsr.core.folder_lock import lock_folder


@pytest.fixture
def places(tmp_path):
    """A link loop, a broken link, a regular file and a usable folder."""
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    os.symlink(tmp_path / "nowhere", tmp_path / "broken")
    (tmp_path / "file").write_text("x")
    (tmp_path / "ok").mkdir()
    return tmp_path


REASONS = [
    ("loop", "loop is a symbolic link loop"),
    ("broken", "broken is a broken symbolic link"),
    ("file", "file is not a directory"),
]


@pytest.mark.parametrize("name, reason", REASONS)
def test_outputs_under_a_dead_link_or_a_file_are_refused_with_the_reason(places, name, reason):
    for out in (places / name / "a.png", places / name / "deeper" / "a.png"):
        with pytest.raises(UserError, match=f"cannot write {re.escape(str(out))}: .*{reason}"):
            check_writable(out, force=True)
        with pytest.raises(UserError, match=reason):
            check_output_folder(out.parent)
    assert check_writable(places / "ok" / "new" / "a.png") == places / "ok" / "new" / "a.png"
    check_output_folder(places / "ok" / "new")


def test_an_output_that_is_a_dead_link_is_refused(places):
    with pytest.raises(UserError, match="it is a symbolic link loop"):
        check_writable(places / "loop", force=True)
    with pytest.raises(UserError, match="it is a broken symbolic link"):
        check_writable(places / "broken", force=True)
    os.symlink(places / "ok", places / "good")  # a link that leads somewhere is fine
    check_output_folder(places / "good")
    check_writable(places / "good" / "a.png")


@pytest.mark.parametrize("name, reason", REASONS)
def test_a_run_folder_lock_names_the_reason(places, name, reason):
    with pytest.raises(UserError, match=f"cannot use .*{reason}"), lock_folder(places / name):
        pass


@pytest.mark.parametrize("name, reason", REASONS)
def test_upscale_out_that_cannot_be_a_folder_is_one_line_before_any_work(
    places, run_cli, name, reason
):
    folder = places / "in"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), np.zeros((8, 8, 3), np.uint8))
    onnx = places / "nearest.onnx"
    nearest_x2_onnx(onnx)
    out = places / name / "sub" if name == "file" else places / name
    code, _, err = run_cli("upscale", folder, "--out", out, "--onnx", onnx, "--provider", "cpu")
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1, err  # not once per image
    assert lines[0].startswith("error: --out") and reason in lines[0], err


def test_outputs_inside_input_folders_are_one_rule(tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    given = [data / "nothing-here.png", None, [tmp_path / "elsewhere"]]  # files and None skip
    for out in (data, data / "run", data / "sub" / "heat.png", data / "new" / "x.png"):
        with pytest.raises(UserError, match="is inside the input folder"):
            check_outside_inputs(out, [*given, data], "--out")
    os.symlink(data, tmp_path / "alias")
    with pytest.raises(UserError, match="is inside the input folder"):
        check_outside_inputs(tmp_path / "alias" / "run", [data])
    check_outside_inputs(tmp_path / "run", [data])
    check_outside_inputs(tmp_path / "data-run", [data])  # a name that starts alike is outside


def test_a_partial_file_named_with_other_digits_is_left_alone(tmp_path):
    out = tmp_path / "m.onnx"
    odd = tmp_path / ".m.onnx.partial-²-abcdefgh.onnx"  # not a pid adaptsr wrote
    odd.write_text("x")
    assert remove_stale_partials(out) == [] and odd.exists()
