"""One error type for everything a user can cause, turned into a one-line message and an exit code.

Engine code raises `DasvError` (or a subclass) with a message that names the file and, where there is
one, the line. The CLI prints `dasv: error: <message>` on stderr and exits with `exit_code`; the
traceback is shown only with `--debug`.
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3  # finished, but some inputs failed (listed); the rest is done
EXIT_INTERRUPTED = 130  # Ctrl-C, after saving what was done


class DasvError(Exception):
    """A problem the user can fix: bad input, missing file, full disk. Printed as one line."""

    exit_code: int = EXIT_ERROR

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class InputError(DasvError):
    """Malformed or inconsistent input data (lists, labels, trials, stores, checkpoints)."""


class AugmentError(InputError):
    """An augmentation source (noise, music, RIR, babble utterance) that cannot be used: the corpus is at
    fault, not the utterance being augmented. Found when the sources are checked, it stops the run
    before any work; met later (a file that decodes badly), it fails the copy that drew it (failed.tsv)."""


class UsageError(DasvError):
    """Options that contradict each other or are missing."""

    exit_code = EXIT_USAGE


def where(path: str | Path, line: int | None = None) -> str:
    """`file:line` (or `file`), the prefix every input error message starts with."""
    return f"{path}:{line}" if line is not None else str(path)


def os_error_message(exc: OSError, path: str | Path | None = None) -> str:
    """A short, user-facing line for an OSError (disk full, permission denied, ...)."""
    import errno

    target = path if path is not None else (exc.filename or "")
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        reason = "no space left on device"
    elif exc.errno == errno.EFBIG:
        reason = "file too large (the disk or a file-size limit is full)"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = "permission denied (read-only location?)" if exc.errno != errno.EROFS else "read-only file system"
    return f"{target}: {reason}" if target else reason
