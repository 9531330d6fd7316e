"""dasv checkpoints: one `.pt` file, written atomically, loaded with `weights_only=True`.

Layout (a plain dict of tensors and plain values, so the safe loader accepts it):
    format        "dasv-checkpoint"
    version       CHECKPOINT_VERSION
    dasv_version  the writing dasv's version
    config        {"model": {...}, "train": {...}, "features": {...}}  (plain dicts)
    model         state dict of SpeakerNet
    optimizer     optimizer state dict (or None)
    step, epoch   ints
    best_eer      float (percent) or None
    rng           {"torch": ByteTensor, "numpy": [..], "python": [..], "cuda": [...]} or None
    speakers      list of speaker names (label -> name) or None
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from dasv_cli.errors import DasvError, InputError, os_error_message

CHECKPOINT_FORMAT = "dasv-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> None:
    """Write `checkpoint` to `path` atomically: a temporary file in the same directory, fsync, rename.

    A crash or a full disk leaves the previous file intact.
    """
    import torch

    from dasv_cli import __version__

    path = Path(path)
    data = dict(checkpoint)
    data.setdefault("format", CHECKPOINT_FORMAT)
    data.setdefault("version", CHECKPOINT_VERSION)
    data.setdefault("dasv_version", __version__)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise DasvError(f"cannot write checkpoint {os_error_message(exc, path)}") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise DasvError(f"cannot write checkpoint {os_error_message(exc, path)}") from exc
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a dasv checkpoint safely (`weights_only=True`); anything else is a one-line error."""
    import pickle

    import torch

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such checkpoint")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a checkpoint file")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsupported content"
        raise InputError(
            f"{path}: not a dasv checkpoint (refused by the safe loader: {first[:200]}); "
            f"an original research-tool .chkpt is converted with `dasv convert`"
        ) from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read checkpoint ({exc.strerror or exc})") from exc
    except Exception as exc:  # torch raises KeyError, struct.error, RuntimeError... on non-checkpoints
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {detail})") from exc
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise InputError(
            f"{path}: not a dasv checkpoint (no '{CHECKPOINT_FORMAT}' format tag); "
            f"an original research-tool .chkpt is converted with `dasv convert`"
        )
    version = data.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise InputError(
            f"{path}: checkpoint format version {version!r} is newer than this dasv understands "
            f"({CHECKPOINT_VERSION}); upgrade dasv"
        )
    for field in ("config", "model"):
        if field not in data:
            raise InputError(f"{path}: checkpoint has no '{field}' entry")
    return data
