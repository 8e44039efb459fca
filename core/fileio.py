"""Safe files: inputs checked before use; outputs never half-written, never overwritten
without --force."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as a package (a dependency there)
    import tomli as tomllib

from adaptsr.core.errors import UserError
from adaptsr.core.image_suffixes import is_image_file


def check_readable(path: str | os.PathLike, what: str) -> Path:
    """`path` as a Path if it is an existing file, else a clear error naming `what` it should be."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"no such {what}: {path}")
    article = "an" if what[:1].lower() in "aeiou" else "a"
    if path.is_dir():
        raise UserError(f"{path} is a directory, expected {article} {what}")
    if not path.is_file():  # a pipe or a device: reading it could wait forever
        raise UserError(
            f"{path} is not a regular file (a pipe or a device), expected {article} {what}"
        )
    return path


def check_writable(path: str | os.PathLike, force: bool = False) -> Path:
    """Fail early, before any work, if `path` exists (without force), is a symbolic link that
    leads nowhere, or its folder is unusable (see check_output_folder)."""
    path = Path(path)
    link = _dead_link(path)
    if link:
        raise UserError(f"cannot write {path}: it is {link}")
    if path.exists() and not force:
        raise UserError(f"{path} already exists (use --force to overwrite)")
    if path.is_dir():
        raise UserError(f"{path} is a directory, expected a file path")
    check_output_folder(path.parent if str(path.parent) else Path("."), f"cannot write {path}")
    return path


def check_output_folder(folder: str | os.PathLike, what: str | None = None) -> Path:
    """Refuse, before any work, an output folder that is (or lies under) a symbolic link loop,
    a broken link or a regular file, or that exists without write permission. A folder that
    does not exist yet is fine: it is created on the first write."""
    folder = Path(folder)
    what = what or f"cannot write into {folder}"
    for place in (folder, *folder.parents):  # nearest first, up to the first existing folder
        link = _dead_link(place)
        if link:
            raise UserError(f"{what}: {place} is {link}")
        if place.is_dir():
            if not os.access(place, os.W_OK):  # where the output or its folders go
                raise UserError(f"{what}: {place} is not writable")
            return folder
        if place.exists():
            raise UserError(f"{what}: {place} is not a directory")
    return folder


def _dead_link(path: Path) -> str | None:
    """What is wrong with `path` as a symbolic link: a loop, or a link to nothing; None when
    it is no link or leads somewhere."""
    if not path.is_symlink():
        return None
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symbolic link loop"
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return f"a broken symbolic link (to {os.readlink(path)}, which does not exist)"
    return None


# A file being written is `.NAME.partial-PID-RANDOM.SUFFIX` beside its target NAME: recognisable,
# hidden, and it keeps the final suffix so that libraries choosing a format by extension
# (safetensors, PIL, onnx) write the right thing. One left by a killed process (kill -9, power
# loss) is removed by the next write of the same target once its process is gone.
PARTIAL = ".partial-"
NAME_MAX = 255  # bytes in one file name on ext4, XFS, APFS, NTFS


def _partial_prefix(path: Path) -> str:
    """`.NAME.partial-`, with NAME shortened so that the whole temporary name (pid, mkstemp's
    8 random characters and the suffix added) stays within NAME_MAX for any valid NAME."""
    room = NAME_MAX - len(os.fsencode(f".{PARTIAL}{2**32}-12345678{path.suffix}"))
    name = path.name
    while name and len(os.fsencode(name)) > room:
        name = name[:-1]
    return f".{name}{PARTIAL}"


def partial_file(path: Path) -> Path:
    """A new, empty temporary file for writing `path` (mode 0600 until chmod_output)."""
    fd, tmp = tempfile.mkstemp(
        prefix=f"{_partial_prefix(path)}{os.getpid()}-", suffix=path.suffix, dir=path.parent
    )
    os.close(fd)
    return Path(tmp)


def partial_folder(path: Path) -> Path:
    """A new, empty scratch folder beside `path` for the work that makes it (named like a
    partial file, so the next write of `path` removes one a killed process left)."""
    return Path(tempfile.mkdtemp(prefix=f"{_partial_prefix(path)}{os.getpid()}-", dir=path.parent))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if sys.platform == "win32":  # os.kill there ends the process (no signal 0): keep its files
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def remove_stale_partials(path: Path) -> list[Path]:
    """Remove the temporary files (and partial_folder folders) of earlier writes of `path`
    whose process has died."""
    removed = []
    prefix = _partial_prefix(path)
    try:
        entries = list(path.parent.iterdir()) if path.parent.is_dir() else []
    except OSError:
        return removed
    for entry in entries:
        rest = entry.name[len(prefix) :] if entry.name.startswith(prefix) else ""
        pid = rest.split("-", 1)[0]
        if not (pid.isascii() and pid.isdigit()) or _alive(int(pid)):  # int() refuses '²'
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed


def chmod_output(path: Path) -> None:
    """Give a finished output the mode of any new file: 0666 less the umask (mkstemp makes
    0600 files, and some writers replace the file they were given)."""
    os.chmod(path, file_mode())


def file_mode() -> int:
    """The mode of a new file: 0666 less the umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temporary file (see PARTIAL) keeps the final suffix; it is removed if the block fails or
    is interrupted, and by the next write of `path` if the process was killed.
    """
    with atomic_outputs([path], force) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_outputs(paths: list, force: bool = False) -> Iterator[list[Path]]:
    """atomic_output for files that belong together (a model and its report): every one is
    published or none is; a file they replace (force) comes back if a later rename fails."""
    paths = [check_writable(p, force) for p in paths]
    temps: list[Path] = []
    try:
        try:
            for path in paths:
                path.parent.mkdir(parents=True, exist_ok=True)
                remove_stale_partials(path)
                temps.append(partial_file(path))
        except OSError as e:
            raise UserError(f"cannot write {path}: {describe_os_error(e)}") from e
        try:
            yield temps
            for tmp in temps:  # after the writer: safetensors, for one, replaces its file
                chmod_output(tmp)
            _publish(list(zip(temps, paths, strict=True)))
        except OSError as e:
            raise UserError(f"cannot write {path}: {describe_os_error(e)}") from e
        except Exception as e:
            if is_disk_full(e) or _nearly_full(paths[0].parent):  # writers wrapping ENOSPC
                raise UserError(f"cannot write {paths[0]}: the disk is full") from e
            raise
    finally:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _publish(pairs: list[tuple[Path, Path]]) -> None:
    """Rename each temporary file onto its target; on a failure, undo the renames made."""
    done: list[tuple[Path, Path | None, bool]] = []  # target, its backup, it existed
    try:
        for tmp, path in pairs:
            backup, existed = None, path.exists()
            if existed and len(pairs) > 1:
                backup = partial_file(path)
                backup.unlink()
                try:
                    os.link(path, backup)
                except OSError:
                    shutil.copy2(path, backup)
            done.append((path, backup, existed))
            os.replace(tmp, path)
    except BaseException:
        for path, backup, existed in reversed(done):
            with contextlib.suppress(OSError):
                if backup is not None:
                    os.replace(backup, path)
                elif not existed:
                    path.unlink(missing_ok=True)
        raise
    finally:
        for _, backup, _ in done:
            if backup is not None:
                with contextlib.suppress(OSError):
                    backup.unlink()


def _nearly_full(folder: Path) -> bool:
    """Under 1 MiB free where a write just failed: the failure was the full disk (safetensors
    reports it as 'unexpected pos', protobuf as a failed serialisation)."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return False
    return st.f_bavail * st.f_frsize < 2**20


def describe_os_error(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return "the disk is full"
    return e.strerror or str(e)


_DISK_FULL_TEXT = ("No space left on device", "StorageFull", "os error 28", "Disk quota exceeded")


def is_disk_full(e: BaseException) -> bool:
    """True when `e` or an exception it was raised from is ENOSPC, or says so in its text
    (safetensors reports a failed write as 'unexpected pos' with the OS error in its text)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e)
        if any(sign in text for sign in _DISK_FULL_TEXT):
            return True
        e = e.__cause__ or e.__context__
    return False


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except (OSError, RuntimeError):  # RuntimeError: a link loop (Python < 3.13)
        return False


def check_not_input(output: str | os.PathLike, inputs, flag: str = "the output") -> None:
    """Refuse, whatever --force says, an output that is one of the inputs: a file that is an
    input file (or a link to one), an existing image inside an input folder, or a folder that
    is an input folder.

    `inputs` holds files and folders, or lists of them (None entries are ignored); call it
    before any work.
    """
    out = Path(output)
    for item in _flat(inputs):
        src = Path(item)
        if _same(out, src):
            kind = "folder" if src.is_dir() else "file"
            raise UserError(
                f"{flag} {out} is the input {kind} {src}: writing it would destroy an input "
                "(choose another path; --force never overwrites inputs)"
            )
        if src.is_dir() and out.is_file() and is_image_file(out) and _inside(out, src):
            raise UserError(
                f"{flag} {out} is an image in the input folder {src}: writing it would destroy "
                "an input (choose another path; --force never overwrites inputs)"
            )


def check_outside_inputs(output: str | os.PathLike, folders, flag: str = "the output") -> None:
    """The one rule for outputs among inputs: refuse, whatever --force says, an output (a file
    or a folder) that is an input folder or lies anywhere inside one. Written there it could
    replace an input, or be read back as one by the next run (a heatmap or a comparison image
    among the training images). `folders` may hold files and None entries: only folders count.
    """
    out = Path(output)
    for item in _flat(folders):
        src = Path(item)
        if src.is_dir() and (_same(out, src) or _inside(out, src)):
            raise UserError(
                f"{flag} {out} is inside the input folder {src}: outputs go outside the inputs "
                "(choose another path; --force never writes among inputs)"
            )


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # RuntimeError: a link loop (Python < 3.13)
        return False


def _flat(items) -> list:
    out = []
    for item in items:
        if isinstance(item, (list, tuple, set)):
            out.extend(_flat(item))
        elif item is not None:
            out.append(item)
    return out


def check_outputs_not_inputs(outputs: dict, inputs) -> None:
    """check_not_input for each {flag: path} in outputs (None paths are ignored)."""
    inputs = _flat(inputs)
    for flag, path in outputs.items():
        if path is not None:
            check_not_input(path, inputs, flag)


def check_distinct_outputs(outputs: dict) -> None:
    """Refuse two outputs of one command at the same path, or one inside the other's folder
    ({flag: path}; None paths are ignored): one would replace the other, --force or not."""
    given = [(flag, Path(path)) for flag, path in outputs.items() if path is not None]
    for i, (flag_a, a) in enumerate(given):
        for flag_b, b in given[i + 1 :]:
            if _same(a, b) or _inside(a, b) or _inside(b, a):
                raise UserError(
                    f"{flag_a} {a} and {flag_b} {b} would write the same place: "
                    "give each output its own path"
                )


class FolderStart:
    """What leave_as_found yields: call keep() once the work is under way (its files are then
    results to keep, not debris of a failed start)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.existed = folder.exists()
        self.before = set(os.listdir(folder)) if folder.is_dir() else set()
        self.kept = False

    def keep(self) -> None:
        self.kept = True

    def undo(self) -> None:
        if not self.folder.is_dir():
            return
        if not self.existed:
            shutil.rmtree(self.folder, ignore_errors=True)
            return
        for name in set(os.listdir(self.folder)) - self.before:
            entry = self.folder / name
            with contextlib.suppress(OSError):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()


@contextlib.contextmanager
def leave_as_found(folder: str | os.PathLike) -> Iterator[FolderStart]:
    """A start that fails (any exception, Ctrl-C, SIGTERM) before keep() is called leaves
    `folder` as it found it: the entries it created are removed, and the folder itself if it
    did not exist. Check every argument inside the block, before keep()."""
    start = FolderStart(Path(folder))
    try:
        yield start
    except BaseException:
        if not start.kept:
            start.undo()
        raise


def loads_toml(text: str) -> dict:
    """A TOML document as a table: the one place TOML is read (tomllib, or tomli on Python
    3.10). A malformed document raises a ValueError (TOMLDecodeError), as json.loads does."""
    return tomllib.loads(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


def parse_json(text: str | bytes, where: str, finite: bool = False):
    """json.loads for files a user gives (or a damaged one): every way the text can be wrong,
    nesting thousands deep included, is a UserError naming `where`; with `finite`, so are NaN,
    Infinity and numbers past float's range (what strict JSON readers refuse)."""
    strict = {"parse_constant": _finite_float, "parse_float": _finite_float} if finite else {}
    try:
        return json.loads(text, **strict)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise UserError(f"cannot read {where}: {e}") from e
    except RecursionError:
        raise UserError(f"cannot read {where}: nested too deeply") from None
