"""Ctrl-C during training: finish the update, write last.pt, exit 130; the third Ctrl-C aborts.

The handler only counts: the loop reads `count` after each update and the ranks agree on stopping
through a collective. One process also treats SIGTERM this way; under DDP the launcher's SIGTERM
is left to dasv_cli.train.distributed, which unwinds the rank.
"""

from __future__ import annotations

import signal
import threading

from dasv_cli import progress

ABORT_AFTER = 3


class Interrupts:
    """Counts SIGINT (and SIGTERM in a world of one) between `install()` and `restore()`."""

    def __init__(self, announce: bool, distributed: bool) -> None:
        self.count = 0
        self._announce = announce
        self._distributed = distributed
        self._old: dict = {}

    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002
        self.count += 1
        if self.count == 1 and self._announce:
            progress.warn("interrupted: finishing this update and writing last.pt (Ctrl-C twice more aborts)")
        if self.count >= ABORT_AFTER:
            raise KeyboardInterrupt

    def install(self) -> None:
        """Take over the signals (only the main thread can; elsewhere nothing changes)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for s in [signal.SIGINT] + ([] if self._distributed else [signal.SIGTERM]):
            self._old[s] = signal.signal(s, self._on_signal)

    def restore(self) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)
        self._old = {}


__all__ = ["Interrupts"]
