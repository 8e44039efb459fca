"""The run-folder lock (core/folder_lock.lock_folder) dies with the process that took it, even when
it forked data-loading workers that outlive it."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from fakes.cli import one_line, tree
from fakes.training import train_cli_args

from adaptsr.core.errors import UserError
from adaptsr.core.folder_lock import lock_folder

HOLDER = textwrap.dedent(
    """
    import multiprocessing, sys, time
    from adaptsr.core.folder_lock import lock_folder

    def worker():  # a data-loading worker: forked while the lock is held, outlives its parent
        time.sleep(60)

    with lock_folder(sys.argv[1], "training run"):
        child = multiprocessing.get_context("fork").Process(target=worker, daemon=False)
        child.start()
        print(child.pid, flush=True)
        time.sleep(60)
    """
)


def test_a_killed_holder_frees_the_folder_though_its_forked_worker_lives_on(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    worker = int(holder.stdout.readline())
    try:
        with (
            pytest.raises(
                UserError, match=f"in use by another adaptsr run \\(process {holder.pid}\\)"
            ),
            lock_folder(tmp_path),
        ):
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        os.kill(worker, 0)  # the orphaned worker is still alive
        deadline = time.monotonic() + 10
        while True:
            try:
                with lock_folder(tmp_path, "training run"):
                    break
            except UserError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        holder.kill()
        os.kill(worker, signal.SIGKILL)


@pytest.mark.usefixtures("one_thread")
def test_a_second_run_into_one_folder_is_refused_while_the_first_lives(
    edsr_files, train_hr, tmp_path, run_cli
):
    import subprocess
    import sys

    from adaptsr.core.folder_lock import lock_folder

    hr = train_hr
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom adaptsr.core.folder_lock import lock_folder\n"
         "with lock_folder(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(60)\n",
         str(run)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = tree(tmp_path)
        code, _, err = run_cli(*train_cli_args(edsr_files["ckpt"], hr, run))
        one_line(code, err, "in use by another", str(holder.pid))
        assert tree(tmp_path) == before
    finally:
        holder.kill()  # kill -9 releases the lock: the OS does it
        holder.wait()
    with lock_folder(run):
        pass


class _FakeMsvcrt:
    """Windows' msvcrt.locking as the lock uses it: a byte range locked by one descriptor at a
    time; a second try fails at once with EACCES."""

    LK_UNLCK, LK_NBLCK = 0, 2

    def __init__(self):
        self.held = {}  # (file, offset) -> descriptor

    def locking(self, fd, mode, nbytes):
        assert nbytes == 1
        key = (os.fstat(fd).st_ino, os.lseek(fd, 0, os.SEEK_CUR))
        if mode == self.LK_UNLCK:
            assert self.held.pop(key) == fd
        elif key in self.held:
            raise PermissionError(13, "Permission denied")
        else:
            self.held[key] = fd


def test_on_windows_the_lock_is_msvcrt_and_leaves_the_holder_readable(tmp_path, monkeypatch):
    from adaptsr.core import folder_lock

    fake = _FakeMsvcrt()
    monkeypatch.setattr(folder_lock, "msvcrt", fake)
    monkeypatch.setattr(folder_lock, "fcntl", None)  # any flock call would fail
    with lock_folder(tmp_path, "training run") as path:
        (key, _), offset = next(iter(fake.held.items())), folder_lock._WINDOWS_LOCK_AT
        assert key[1] == offset > len(path.read_bytes())  # the process id lies before the lock
        with (
            pytest.raises(
                UserError, match=f"in use by another adaptsr run \\(process {os.getpid()}\\)"
            ),
            lock_folder(tmp_path),
        ):
            pass
    assert fake.held == {}  # unlocked before the close
    with lock_folder(tmp_path):
        assert len(fake.held) == 1


WINDOWS = textwrap.dedent(
    """
    import sys, types
    import click, cv2, numpy, safetensors, spandrel, torch, tqdm  # loaded as anywhere
    for name in ("fcntl", "resource", "termios", "pwd", "grp"):
        sys.modules[name] = None  # POSIX only: importing one fails, as on Windows
    msvcrt = types.ModuleType("msvcrt")
    msvcrt.LK_UNLCK, msvcrt.LK_NBLCK, msvcrt.calls = 0, 2, []
    msvcrt.locking = lambda fd, mode, n: msvcrt.calls.append(mode)
    sys.modules["msvcrt"], sys.platform = msvcrt, "win32"
    from adaptsr.adapt import train
    from adaptsr.cli.commands import train as command
    from adaptsr.core.folder_lock import lock_folder
    with lock_folder(sys.argv[1], "training run"):
        pass
    print(msvcrt.calls)
    """
)


def test_adapt_train_starts_without_posix_only_modules(tmp_path):
    """What `adapt train` imports, and its lock, on a Python that looks like Windows'."""
    done = subprocess.run(
        [sys.executable, "-c", WINDOWS, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["[2,", "0]"]  # locked without waiting, then unlocked
