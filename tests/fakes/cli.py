"""What a command leaves behind: its one `error:` line, and the files under a folder."""


def one_line(code, err, *words):
    """Assert a failed command printed one `error:` line (no traceback, no "internal error")
    holding each of `words`; return that line."""
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), err
    assert "Traceback" not in err and "internal error" not in err, err
    for word in words:
        assert word in lines[-1], lines[-1]
    return lines[-1]


def only_line(code, err, fragment):
    """Assert a failed command's whole stderr is one `error:` line holding `fragment`."""
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0], lines[0]


def tree(folder):
    """Every file under `folder` with its bytes, to compare before and after a command."""
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
