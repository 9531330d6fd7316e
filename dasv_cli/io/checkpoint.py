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
from pathlib import Path
from typing import Any

from dasv_cli.errors import InputError
from dasv_cli.io.atomic import atomic_path
from dasv_cli.io.paths import require_file

CHECKPOINT_FORMAT = "dasv-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> None:
    """Write `checkpoint` to `path` atomically: a temporary file in the same directory, fsync, rename.

    A crash or a full disk leaves the previous file intact.
    """
    import torch

    from dasv_cli import __version__

    data = dict(checkpoint)
    data.setdefault("format", CHECKPOINT_FORMAT)
    data.setdefault("version", CHECKPOINT_VERSION)
    data.setdefault("dasv_version", __version__)
    with atomic_path(Path(path), "checkpoint") as tmp:
        with open(tmp, "wb") as fh:
            torch.save(data, fh)
            fh.flush()
            os.fsync(fh.fileno())


def unreadable_reason(exc: BaseException) -> str:
    """Why torch.load failed on a file, in words a user can act on (not torch's internal message)."""
    text = str(exc).strip()
    if "central directory" in text or "file read failed" in text or isinstance(exc, EOFError):
        return "truncated or damaged PyTorch archive (an interrupted copy or download?)"
    if isinstance(exc, (KeyError, IndexError)) or "magic number" in text or "invalid load key" in text:
        return "not a PyTorch file (text or another format?)"
    first = (text.splitlines() or [type(exc).__name__])[0][:160]
    return f"{type(exc).__name__}: {first}"


def state_dict_mismatch(exc: BaseException) -> str:
    """torch's many-line load_state_dict error as one line: the first wrong shape, and how many
    tensors are wrong, missing or unexpected (what tells a user which option differs)."""
    import re

    text = str(exc)
    sizes = re.findall(r"size mismatch for ([\w.]+): copying a param with shape torch\.Size\(\[([^\]]*)\]\) "
                       r"from checkpoint, the shape in current model is torch\.Size\(\[([^\]]*)\]\)", text)
    parts = []
    if sizes:
        name, have, want = sizes[0]
        parts.append(f"{name} is [{have}] in the checkpoint but [{want}] in the network"
                     + (f" ({len(sizes)} tensors differ in shape)" if len(sizes) > 1 else ""))
    for label in ("Missing key(s)", "Unexpected key(s)"):
        m = re.search(label + r" in state_dict: ([^\n]*)", text)
        if m:
            keys = [k.strip().strip('"') for k in m.group(1).rstrip(". ").split(",") if k.strip()]
            parts.append(f"{label.split()[0].lower()} {len(keys)} tensor(s), e.g. {keys[0]}")
    if not parts:
        parts.append((text.strip().splitlines() or [type(exc).__name__])[0][:200])
    return "; ".join(parts)


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a dasv checkpoint safely (`weights_only=True`); anything else is a one-line error."""
    import pickle

    import torch

    path = require_file(Path(path), "a checkpoint file", "no such checkpoint")
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
        raise InputError(f"{path}: not a readable checkpoint: {unreadable_reason(exc)}") from exc
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
