import subprocess
import sys

import torch

import adaptsr


def test_help_and_version(run_cli):
    code, out, _ = run_cli("--help")
    assert code == 0 and "models" in out
    code, out, _ = run_cli("--version")
    assert code == 0 and adaptsr.__version__ in out


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
    script = [sys.executable, "-m", "adaptsr.cli"]
    r = subprocess.run([*script, "no-such-command"], capture_output=True, text=True)
    _one_line_error(r.returncode, r.stderr)


def test_debug_shows_traceback(run_cli, monkeypatch):
    import adaptsr.cli as cli

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
