"""`adapt fetch NAME`: download a configuration's official weights (adapt/releases.py) into the
user cache, where `load_model(NAME)` finds them.

The download goes to `<file>.part` beside its place in the cache; the whole file's sha256 is
checked before it is renamed into place, so a cached file is always a checked one. A download
cut short keeps its partial file and the next attempt asks for the rest (an HTTP Range
request); a server that ignores the range sends the whole file again and the partial restarts.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from adaptsr.adapt.releases import RELEASES, Release
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import describe_os_error
from adaptsr.core.progress import progress_bar

CHUNK = 1 << 20
ATTEMPTS = 3  # a cut download resumes this many times within one `adapt fetch`
TIMEOUT_S = 60


def cache_dir() -> Path:
    """Where fetched weights live: $ADAPTSR_CACHE, else ~/.cache/adaptsr/weights."""
    given = os.environ.get("ADAPTSR_CACHE")
    return Path(given).expanduser() if given else Path.home() / ".cache" / "adaptsr" / "weights"


def release_of(name: str) -> Release:
    if name not in RELEASES:
        listed = ", ".join(RELEASES)
        raise UserError(f"no official release is recorded for {name!r} (releases: {listed})")
    return RELEASES[name]


def cached_path(name: str) -> Path | None:
    """The fetched weights of configuration `name`, or None when there are none. Only checked
    files are renamed into place; the size guards against a file changed since."""
    release = RELEASES.get(name)
    if release is None:
        return None
    path = cache_dir() / release.file
    try:
        return path if path.is_file() and path.stat().st_size == release.size else None
    except OSError:
        return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def fetch(name: str, progress: bool = True) -> Path:
    """Download the official weights of configuration `name` (once) and return their path."""
    release = release_of(name)
    target = cache_dir() / release.file
    if cached_path(name):
        return target
    part = target.with_name(target.name + ".part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(ATTEMPTS):
            if _download(release, part, progress):
                break
        else:
            got = part.stat().st_size if part.exists() else 0
            raise UserError(
                f"the download of {release.url} was cut at {got:,} of {release.size:,} bytes; "
                f"run `adapt fetch {name}` again to resume"
            )
        found = sha256_of(part)
        if found != release.sha256:
            part.unlink()
            raise UserError(
                f"refused {release.file}: its sha256 is {found}, not the published "
                f"{release.sha256}; the file was not kept"
            )
        os.replace(part, target)
    except OSError as e:
        raise UserError(f"cannot write {target}: {describe_os_error(e)}") from e
    return target


def _download(release: Release, part: Path, progress: bool) -> bool:
    """One attempt: fetch the rest of `part` (or all of it); True when it is whole."""
    have = part.stat().st_size if part.exists() else 0
    if have == release.size:  # whole, but stopped before its check
        return True
    if have > release.size:  # not this release's file: start again
        part.unlink()
        have = 0
    request = urllib.request.Request(release.url)
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            if have and not _continues_at(response, have):
                have = 0  # the server sent the whole file
            with (
                open(part, "ab" if have else "wb") as f,
                progress_bar(
                    total=release.size,
                    initial=have,
                    unit="B",
                    unit_scale=True,
                    desc=release.file,
                    enabled=progress,
                ) as bar,
            ):
                while block := response.read(CHUNK):
                    f.write(block)
                    bar.update(len(block))
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the range is past the server's file: start again
            part.unlink()
            return False
        raise UserError(f"cannot download {release.url}: HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise UserError(f"cannot download {release.url}: {e.reason}") from e
    except (http.client.HTTPException, ConnectionError, TimeoutError):
        return False  # cut short: what arrived stays in `part` for the next attempt
    return part.stat().st_size == release.size


def _continues_at(response, offset: int) -> bool:
    """Whether the server answered the Range request with the bytes from `offset` on."""
    content_range = response.headers.get("Content-Range", "")
    return response.status == 206 and content_range.startswith(f"bytes {offset}-")
