"""Safe files: inputs checked before use; outputs never half-written, never overwritten
without --force."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from adaptsr.errors import UserError


def check_readable(path: str | os.PathLike, what: str) -> Path:
    """`path` as a Path if it is an existing file, else a clear error naming `what` it should be."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"no such {what}: {path}")
    if path.is_dir():
        article = "an" if what[:1].lower() in "aeiou" else "a"
        raise UserError(f"{path} is a directory, expected {article} {what}")
    return path


def check_writable(path: str | os.PathLike, force: bool = False) -> Path:
    """Fail early, before any work, if `path` exists (without force) or its folder is unusable."""
    path = Path(path)
    if path.exists() and not force:
        raise UserError(f"{path} already exists (use --force to overwrite)")
    if path.is_dir():
        raise UserError(f"{path} is a directory, expected a file path")
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise UserError(f"cannot write {path}: {parent} is not a directory")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise UserError(f"cannot write {path}: {parent} is not writable")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temporary file keeps the final suffix so that libraries choosing a format by extension
    (safetensors, PIL, onnx) write the right thing.
    """
    path = check_writable(path, force)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from e
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs follow the umask
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
