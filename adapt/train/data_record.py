"""RUN_DIR/data.json: the training data a run started on, so that --resume notices when it
changed (a resumed run replays exactly only on the same images).

Each image the scan looked at (used, unreadable or too small; training and validation) is
recorded by its path with its size in bytes and its size in pixels. Modification times are left
out on purpose: copying a dataset to another machine changes them, not the pictures.

`source_degradations` is what a run records (config.json, adapter metadata) of the --data
sources that have a degradation of their own: the settings a file holds, as --degradation FILE
is recorded, not only the file's path.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from adaptsr.adapt import degradation_file
from adaptsr.adapt.data import Entry, Scan, parse_source
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import atomic_output, parse_json

DATA_RECORD = "data.json"
FORMAT = "adaptsr-training-data-1"
ACCEPT_FLAG = "--resume-changed-data"


def fingerprint(found: Scan, val_entries: list[Entry]) -> dict[str, list]:
    """{path: [bytes, height, width]} of every file the scans looked at (height and width
    None for a file that could not be read)."""
    sized: dict[Path, tuple[int, int] | tuple[None, None]] = {}
    for entry in [*found.entries, *val_entries]:
        sized[entry.hr] = entry.hr_size
        if entry.lr is not None:
            sized.setdefault(entry.lr, (None, None))
    for path in [*found.corrupt, *found.too_small]:
        sized.setdefault(path, (None, None))
    return {str(path): [_bytes(path), *size] for path, size in sorted(sized.items())}


def source_degradations(data: list[str]) -> dict[str, str | dict]:
    """{--data spec: its degradation as recorded (a preset's name, or the settings table of a
    file)} for each source with a degradation of its own."""
    out = {}
    for spec in data:
        source = parse_source(spec)
        if source.degradation:
            out[spec] = degradation_file.recorded(source.degradation)
    return out


def _bytes(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def write_record(run_dir: Path, files: dict[str, list]) -> None:
    with atomic_output(run_dir / DATA_RECORD, force=True) as tmp:
        tmp.write_text(json.dumps({"format": FORMAT, "files": files}, indent=1) + "\n")


def read_record(run_dir: Path) -> dict[str, list] | None:
    """The recorded fingerprint; None for a run started before runs recorded their data."""
    path = run_dir / DATA_RECORD
    if not path.exists():
        return None
    try:
        text = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from e
    record = parse_json(text, str(path))
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, dict) or record.get("format") != FORMAT:
        raise UserError(
            f"{path} is not a record of training data (damaged?): remove it to resume without "
            "checking the data"
        )
    return files


@dataclass(frozen=True)
class DataChange:
    added: list[str]
    removed: list[str]
    changed: list[str]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def describe(self) -> str:
        parts = [
            f"{len(names)} {what} (e.g. {names[0]})"
            for what, names in (
                ("added", self.added),
                ("removed", self.removed),
                ("changed size", self.changed),
            )
            if names
        ]
        return ", ".join(parts)


def compare(before: dict[str, list], now: dict[str, list]) -> DataChange:
    return DataChange(
        added=sorted(set(now) - set(before)),
        removed=sorted(set(before) - set(now)),
        changed=sorted(k for k in set(now) & set(before) if list(now[k]) != list(before[k])),
    )


def check_resumed_data(run_dir: Path, files: dict[str, list], accept: bool, say) -> bool:
    """On --resume: refuse data that changed since the run started unless `accept`; returns
    whether the record must be written again (changed and accepted, or never written)."""
    before = read_record(run_dir)
    if before is None:
        return True
    change = compare(before, files)
    if not change:
        return False
    text = f"the training data changed since the run in {run_dir} started: {change.describe()}"
    if not accept:
        raise UserError(
            f"{text}; a resumed run would not replay the same images (give {ACCEPT_FLAG} to "
            "continue on the data as it is now)"
        )
    say(f"note: {text}; continuing on the data as it is now ({ACCEPT_FLAG})")
    return True
