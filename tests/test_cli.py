import subprocess
import sys

import torch

import adaptsr

RANDOM_OK = "--allow-random-base"  # safmn-x4 is a configuration with random weights


def test_help_and_version(run_cli):
    code, out, _ = run_cli("--help")
    assert code == 0 and "models" in out
    code, out, _ = run_cli("--version")
    assert code == 0 and adaptsr.__version__ in out
    code, _, err = run_cli("export")  # a group without its command shows its help, not one line
    assert code == 2 and err.startswith("Usage: adapt export") and "\n  onnx " in err


def test_models_lists_builtins(run_cli):
    code, out, _ = run_cli("models")
    assert code == 0
    assert "swinir-m-x4" in out and "11,900,199" in out


def _one_line_error(code, err):
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err


def test_usage_errors_are_one_line(run_cli):
    _one_line_error(*run_cli("no-such-command")[::2])
    _one_line_error(*run_cli("models", "--no-such-flag")[::2])


def test_console_script_bad_input_no_traceback(tmp_path):
    """The installed `adapt` script: a user-facing failure is one line, exit non-zero."""
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"junk")
    script = [sys.executable, "-m", "adaptsr.cli.app"]
    r = subprocess.run([*script, "no-such-command"], capture_output=True, text=True)
    _one_line_error(r.returncode, r.stderr)


def test_debug_shows_traceback(run_cli, monkeypatch):
    import adaptsr.cli.app as cli

    def boom():
        raise adaptsr.UserError("kaboom")

    monkeypatch.setattr(cli, "_debug", False)
    try:
        cli.main(["--debug", "no-such-command"])
    except BaseException as e:  # --debug re-raises the original exception
        assert not isinstance(e, SystemExit)
    else:
        raise AssertionError("--debug should re-raise")
    monkeypatch.setattr(cli, "_debug", False)
    assert torch.__version__  # torch stays importable after the CLI ran


def test_merge_bad_inputs_are_one_line(tmp_path, run_cli):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"junk")
    unknown = tmp_path / "unknown.safetensors"
    from safetensors.torch import save_file

    save_file({"foo.weight": torch.zeros(2)}, str(unknown))
    adapter = tmp_path / "a.safetensors"
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    cases = [
        (["--model", tmp_path / "missing.pth"], "no model file"),
        (["--model", corrupt], "cannot read"),
        (["--model", unknown], "unknown architecture"),
        (["--model", "safmn-x4", "--out", locked / "m.safetensors", RANDOM_OK], "not writable"),
    ]
    import os

    for args, message in cases:
        if message == "not writable" and os.geteuid() == 0:
            continue  # root writes anywhere: permission bits cannot make this case
        full = ["merge", "--adapter", adapter, "--out", tmp_path / "o.safetensors", *args]
        code, _, err = run_cli(*full)
        _one_line_error(code, err)
        assert message in err, (args, err)
    code, _, err = run_cli(
        "merge", "--model", "safmn-x4", "--adapter", adapter, "--out", tmp_path / "o.safetensors",
        RANDOM_OK,
    )  # fmt: skip
    _one_line_error(code, err)
    assert "no such adapter file" in err


def test_unwritable_output_folder_is_one_line(tmp_path, run_cli):
    # A path whose parent is a file cannot be created, even as root.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(
        "merge",
        "--model",
        "safmn-x4",
        "--adapter",
        tmp_path / "a.st",
        "--out",
        blocker / "m.safetensors",
    )
    _one_line_error(code, err)
    assert "not a directory" in err
