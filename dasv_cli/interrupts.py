"""Ctrl-C as a request to stop at the next clean point, for work that keeps what it finished
(`dasv features` between files, `dasv embed` between batches).

Python raises KeyboardInterrupt wherever the main thread happens to be when SIGINT arrives: inside a
weakref callback or a finaliser it is printed as "Exception ignored" and lost (the run goes on), and
inside a string `exec` (dataclasses and namedtuple build their methods that way, so any lazy import)
CPython remembers it as unhandled and, under `python -m`, kills the process with SIGINT after dasv has
already saved its work and chosen exit code 130. So the first Ctrl-C only sets a flag, which the work
checks where stopping leaves a consistent state; a second Ctrl-C stops at once.
"""

from __future__ import annotations

import signal
import threading
from typing import Any


class InterruptFlag:
    """SIGINT -> a flag (first time) or KeyboardInterrupt (second time); installed in the main thread only."""

    def __init__(self) -> None:
        self.requested = False
        self.forced = False
        self._previous: Any = None
        self._installed = False

    def _handler(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        if self.requested:
            self.forced = True
            raise KeyboardInterrupt
        self.requested = True

    def install(self) -> None:
        """Take over SIGINT (elsewhere than the main thread Python cannot, and nothing changes)."""
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
            self._installed = True

    def restore(self) -> None:
        """Give SIGINT back to whoever had it."""
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def check(self) -> None:
        """Raise KeyboardInterrupt here, at a clean point, if Ctrl-C was pressed."""
        if self.requested:
            raise KeyboardInterrupt

    def __enter__(self) -> "InterruptFlag":
        self.install()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.restore()
