"""The run-folder lock: one adaptsr process writes a folder at a time (`adapt train` holds it
for its run). An OS lock, on POSIX and Windows alike, so the OS frees it when its holder dies."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from adaptsr.core.errors import UserError
from adaptsr.core.fileio import check_output_folder, describe_os_error, file_mode

if sys.platform == "win32":
    import msvcrt

    fcntl = None
else:
    import fcntl

    msvcrt = None

LOCK_NAME = ".adaptsr.lock"
# Windows locks a byte range against reads too: the lock sits past the holder's process id
# (written at the start), so that a second process can still read whom it waits for
_WINDOWS_LOCK_AT = 1 << 12
_HELD_LOCKS: set[int] = set()  # descriptors of the folder locks this process holds


def _drop_inherited_locks() -> None:
    """In a forked child (data-loading workers), close the copies of the parent's lock
    descriptors: a flock lives as long as any copy is open, so an orphaned worker would keep
    the folder locked after its parent was killed."""
    for fd in _HELD_LOCKS:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD_LOCKS.clear()


if hasattr(os, "register_at_fork"):  # POSIX, where flock is
    os.register_at_fork(after_in_child=_drop_inherited_locks)


def _try_lock(fd: int) -> bool:
    """Take the OS's exclusive lock on the open lock file without waiting: flock on POSIX,
    msvcrt.locking on Windows. Both end with the process, kill -9 or a crash included."""
    if msvcrt is not None:
        os.lseek(fd, _WINDOWS_LOCK_AT, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:  # held by another process (EACCES, or EDEADLOCK after its retries)
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(fd: int) -> None:
    """Windows releases a closed file's locks only eventually: unlock first. flock ends with
    the descriptor's close."""
    if msvcrt is not None:
        os.lseek(fd, _WINDOWS_LOCK_AT, os.SEEK_SET)
        with contextlib.suppress(OSError):
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def _read_holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 32).decode(errors="replace").strip()


def _write_holder(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"{os.getpid()}\n".encode())


@contextlib.contextmanager
def lock_folder(folder: str | os.PathLike, what: str = "run") -> Iterator[Path]:
    """Hold an OS lock on FOLDER/.adaptsr.lock for the block: a second process asking for it
    gets a one-line UserError naming the holder's process. The OS releases it when the holder
    dies (kill -9 too), forked children included: they do not inherit it
    (`_drop_inherited_locks`). POSIX and Windows alike (`_try_lock`)."""
    folder = check_output_folder(folder, f"cannot use {folder}")
    path = folder / LOCK_NAME
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, flags, file_mode())
    except OSError as e:
        raise UserError(f"cannot use {folder}: {describe_os_error(e)}") from e
    locked = False
    try:
        if not _try_lock(fd):
            holder = _read_holder(fd) or "another"
            raise UserError(
                f"{folder} is in use by another adaptsr {what} (process {holder}): wait for it "
                "to finish, or choose another folder"
            )
        locked = True
        _write_holder(fd)
        _HELD_LOCKS.add(fd)
        yield path
    finally:
        _HELD_LOCKS.discard(fd)
        if locked:
            _unlock(fd)
        os.close(fd)  # closing releases the lock
