"""Progress on stderr (core/progress.py): a tqdm bar on a terminal, whole lines in a log file,
never a carriage return there; `adapt upscale --quiet` prints only errors."""

import io
import subprocess
import sys

import pytest
from fakes.training import train_cli_args
from tqdm import tqdm

from adaptsr.core import progress
from adaptsr.core.progress import LineProgress, progress_bar


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_lines_every_ten_percent_and_at_the_end_without_carriage_returns():
    out = io.StringIO()
    bar = LineProgress(range(25), desc="eval", unit="img", file=out)
    for i in bar:
        bar.set_postfix_str(f"image {i}")
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 10  # 12%, 20%, 32%, ... 100%: each ten-percent step once
    assert lines[0].startswith("eval:  12% 3/25")
    assert lines[-1].startswith("eval: 100% 25/25") and "image 24" in lines[-1]


def test_a_closed_bar_writes_its_last_count_once():
    out = io.StringIO()
    with LineProgress(total=1000, initial=100, unit="B", unit_scale=True, file=out) as bar:
        bar.update(50)  # 15%: no new ten-percent step since the start at 10%
    bar.close()  # a second close writes nothing
    assert out.getvalue().splitlines() == [out.getvalue().splitlines()[0]]
    assert "150/1.00k" in out.getvalue()


def test_stages_without_a_count_are_one_line_each():
    out = io.StringIO()
    with LineProgress(total=0, bar_format="{desc}", file=out) as bar:
        bar.set_description_str("exporting")
        bar.set_description_str("checking parity")
    assert out.getvalue() == "exporting\nchecking parity\n"


def test_the_bar_follows_stderr(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert type(progress_bar(total=3)) is tqdm
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert isinstance(progress_bar(total=3), LineProgress)
    silent = progress_bar(total=3, off_terminal=False)
    assert silent.disable and progress_bar(total=3, enabled=False).disable
    assert list(progress_bar([1, 2], enabled=False)) == [1, 2]  # a disabled bar still iterates


def test_is_terminal_of_a_closed_stream_is_false():
    stream = io.StringIO()
    stream.close()
    assert not progress.is_terminal(stream)


def test_a_training_run_logged_to_a_file_has_no_carriage_returns(edsr_files, train_hr, tmp_path):
    args = [
        a for a in train_cli_args(edsr_files["ckpt"], train_hr, tmp_path / "run") if a != "--quiet"
    ]
    log = tmp_path / "stderr.log"
    with open(log, "wb") as err:
        done = subprocess.run(
            [sys.executable, "-m", "adaptsr.cli.app", *map(str, args), "--iters", "20"],
            stderr=err, stdout=subprocess.PIPE, timeout=300,
        )  # fmt: skip
    text = log.read_bytes().decode()
    assert done.returncode == 0, text
    assert "\r" not in text
    assert "\ntrain: 100% 20/20 " in text and "\ntrain:  50% 10/20 " in text  # plain lines


@pytest.mark.parametrize("quiet", [False, True])
def test_upscale_quiet_prints_only_errors(edsr_files, tmp_path, run_cli, quiet):
    out = tmp_path / "out"
    (out).mkdir()
    (out / "0.png").write_bytes(b"")  # an existing output: a note without --quiet
    flags = ["--quiet"] if quiet else []
    code, stdout, stderr = run_cli(
        "upscale", edsr_files["images"], "--model", edsr_files["ckpt"], "--out", out, *flags
    )
    assert code == 0, stderr
    if quiet:
        assert stdout == "" and stderr == ""
    else:
        assert "wrote 2 image(s)" in stdout and "skipped 1 existing" in stderr


def test_every_bar_is_made_by_the_one_helper():
    """The terminal-or-log rule lives in core/progress.py: no other module builds a tqdm bar."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    makers = []
    for folder in ("core", "kernels", "serve", "adapt", "export", "cli"):
        for path in (root / folder).rglob("*.py"):
            text = path.read_text()
            if path.name != "progress.py" and ("tqdm(" in text or "trange(" in text):
                makers.append(str(path.relative_to(root)))
    assert makers == []
