"""An `error:` line is one line whatever user text it repeats: control characters in a file
name or a rank-map key are written as escapes, so the name shown is the name meant."""

import pytest

from adaptsr.cli.app import error_line
from adaptsr.core.errors import UserError


def test_control_characters_in_user_text_are_escaped(run_cli, tmp_path):
    name = tmp_path / "x\ny\x1b[31m\r.onnx"
    code, _, err = run_cli("bench", name)
    assert code == 1
    shown = str(tmp_path) + "/x\\ny\\x1b[31m\\r.onnx"
    assert err == f"error: no such ONNX file: {shown}\n", err


def test_an_error_line_is_one_printable_line():
    assert error_line("  bad key 'a\tb'\n") == "error: bad key 'a\\tb'"
    assert error_line("über \u2028 \x00 \udcff") == "error: über \\u2028 \\x00 \\udcff"
    for text in ("a\nb", "a\r\nb", "\x1b]0;title\x07", "a\x85b", "a\u2029b"):
        line = error_line(text)
        assert line.isprintable() and line.splitlines() == [line], repr(line)


@pytest.mark.usefixtures("one_thread")
def test_an_error_never_continues_a_progress_line(tmp_path, run_cli, monkeypatch):
    """A progress bar on a non-terminal stderr ends with a carriage return; the error line
    that follows starts a line of its own."""
    import sys

    import click

    import adaptsr.cli.app

    @click.command()
    def fails():
        sys.stderr.write("\r 50%|#####     | 1/2")
        raise UserError("it broke")

    monkeypatch.setitem(adaptsr.cli.app.COMMANDS, "fails", "test_error_lines:fails")
    monkeypatch.setattr(sys.modules[__name__], "fails", fails, raising=False)
    code, _, err = run_cli("fails")
    assert code == 1
    assert err.endswith("1/2\nerror: it broke\n"), repr(err)
