import os

import pytest

# Small thread counts keep the suite predictable on 2-core CI machines.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def one_thread():
    """One torch thread for the test (tests that time or compare runs use it)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def run_cli(capsys):
    """Run `adapt ARGS...` in-process; return (exit code, stdout, stderr)."""
    from adaptsr.cli.app import main

    def run(*args):
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run
