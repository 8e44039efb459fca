"""Ctrl-C and SIGTERM during training: the loop checkpoints and stops at the end of the step."""

from __future__ import annotations

import signal
import threading


class StopFlag:
    """Set by Ctrl-C (SIGINT) or SIGTERM: the loop checkpoints and stops; a second signal
    interrupts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.set = False
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
