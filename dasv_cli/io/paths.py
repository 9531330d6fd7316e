"""The one check that an input path names what a command expects, and the one way an output directory is
made, with the one-line messages users see."""

from __future__ import annotations

from pathlib import Path

from dasv_cli.errors import DasvError, InputError, os_error_message


def require_file(path: str | Path, expected: str, missing: str = "no such file") -> Path:
    """`path` as a Path when it is an existing file; else an InputError such as
    `X: no such checkpoint` or `X: is a directory, expected a checkpoint file`.

    `expected` completes "is a directory, expected ..." (e.g. "a list file"); `missing` replaces
    "no such file" where a hint helps (e.g. "no such embedding table (make one with `dasv embed`)").
    """
    p = refuse_directory(path, expected)
    if not p.exists():
        raise InputError(f"{path}: {missing}")
    return p


def refuse_directory(path: str | Path, expected: str) -> Path:
    """`path` as a Path unless it is a directory: then `X: is a directory, expected <expected>`
    (for inputs, and for outputs that must not land inside a directory named by mistake)."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{path}: is a directory, expected {expected}")
    return p


def require_dir(path: str | Path, expected: str, missing: str = "no such directory") -> Path:
    """`path` as a Path when it is an existing directory; else `X: <missing>` or `X: is a file, expected <expected>`."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: {missing}")
    if not p.is_dir():
        raise InputError(f"{path}: is a file, expected {expected}")
    return p


def create_dir(path: str | Path, noun: str, hint: str = "") -> Path:
    """`path` as a Path to an existing directory, made with its parents where missing; else a DasvError
    `X: is a file, expected <noun><hint>` or `cannot create <noun> X: <reason>` (permission denied, ...).

    `noun` names the directory for the user ("the output directory"); `hint` says what to do about a
    file in its place (e.g. " (choose another -o)").
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise DasvError(f"{path}: is a file, expected {noun}{hint}")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DasvError(f"cannot create {noun} {os_error_message(exc, path)}") from exc
    return p
