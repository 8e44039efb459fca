"""The run-folder lock (core/fileio.lock_folder) dies with the process that took it, even when
it forked data-loading workers that outlive it."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from adaptsr.core.errors import UserError
from adaptsr.core.fileio import lock_folder

HOLDER = textwrap.dedent(
    """
    import multiprocessing, sys, time
    from adaptsr.core.fileio import lock_folder

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
