"""Progress on stderr, the one rule for every command: a tqdm bar on a terminal, plain lines
elsewhere.

A tqdm bar redraws itself with carriage returns; written to a log file those frames pile up into
one unreadable line. So when stderr is not a terminal, `progress_bar` returns a `LineProgress`:
the same calls (iterate, update, set_postfix, set_description, close), written as whole lines,
one each LINE_STEP percent of the total and one at the end, in tqdm's own format.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator

from tqdm import tqdm

LINE_STEP = 10  # percent of the total between two lines off a terminal
LINE_SECONDS = 60.0  # without a total: a line at most this often


def is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: float | None = None,
    desc: str | None = None,
    unit: str = "it",
    enabled: bool = True,
    off_terminal: bool = True,
    leave: bool = True,
    **options,
):
    """A progress display on stderr: nothing when not `enabled`; a tqdm bar on a terminal;
    elsewhere plain lines (LineProgress), or nothing when not `off_terminal`.

    `options` are tqdm's (initial, unit_scale, bar_format, ...)."""
    stream = sys.stderr
    if not enabled or not (off_terminal or is_terminal(stream)):
        return tqdm(iterable, total=total, disable=True)
    if is_terminal(stream):
        return tqdm(
            iterable, total=total, desc=desc, unit=unit, leave=leave, file=stream,
            dynamic_ncols=True, **options,
        )  # fmt: skip
    return LineProgress(iterable, total=total, desc=desc, unit=unit, file=stream, **options)


class LineProgress:
    """tqdm's calls, written as whole lines: never a carriage return."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        total: float | None = None,
        desc: str | None = None,
        unit: str = "it",
        file=None,
        initial: float = 0,
        unit_scale: bool = False,
        **_display_only,  # dynamic_ncols, bar_format, ...: a terminal's concerns
    ):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total = total or None
        self.desc, self.unit, self.unit_scale = desc, unit, unit_scale
        self.file = file if file is not None else sys.stderr
        self.n = self.initial = initial
        self.postfix = ""
        self.start = time.monotonic()
        self.written_step = self._step()  # the step already shown (the start counts as shown)
        self.written_n, self.written_at = self.n, self.start
        self.closed = False

    def _step(self) -> int:
        if not self.total:
            return 0
        return int(self.n * 100 / self.total) // LINE_STEP

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update(1)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        step = self._step()
        due = step > self.written_step if self.total else self._late()
        if due:
            self.written_step = step
            self._line()

    def _late(self) -> bool:
        return time.monotonic() - self.written_at >= LINE_SECONDS

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **values) -> None:
        values = {**(ordered_dict or {}), **values}
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        """A new stage: shown at once, as its own line."""
        self.desc = desc
        self._line()

    set_description_str = set_description

    def _line(self) -> None:
        if not self.total and not self.n:  # a stage without a count (bar_format "{desc}")
            self._write(self.desc or "")
            return
        text = tqdm.format_meter(
            self.n, self.total, time.monotonic() - self.start, prefix=self.desc or "",
            unit=self.unit, unit_scale=self.unit_scale, postfix=self.postfix or None,
            initial=self.initial, ncols=0,  # no bar drawing: the numbers
        )  # fmt: skip
        self._write(text.strip())

    def _write(self, text: str) -> None:
        self.file.write(text + "\n")
        self.file.flush()
        self.written_n, self.written_at = self.n, time.monotonic()

    def close(self) -> None:
        """The last line, unless the last update already wrote it."""
        if self.closed:
            return
        self.closed = True
        if self.n != self.written_n:
            self._line()
