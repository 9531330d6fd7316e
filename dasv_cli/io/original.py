"""Checkpoints of the original research tool (DoubleAttentionSpeakerVerification, `.chkpt` files).

Such a file is a `torch.save`d dict: `model` (state dict of its SpeakerClassifier), `settings` (a
pickled argparse.Namespace of its command-line options), `optimizer`, `epoch`, `step`. It is read with
torch's restricted weights-only unpickler (tensors, plain containers and values) plus exactly one
extra admitted class, argparse.Namespace; any other pickled global (a function, a class) is refused
before anything runs. The state dict is mapped onto dasv's network by dasv_cli.io.original_layout.
"""

from __future__ import annotations

import pickletools
import re
import zipfile
from pathlib import Path
from typing import Any

from dasv_cli.errors import InputError
from dasv_cli.io.original_layout import infer_config, map_state
from dasv_cli.io.paths import require_file
from dasv_cli.io.plain import plain

_PLAIN = (str, int, float, bool, type(None))


# --------------------------------------------------------------------------- detection (no unpickling)


def _pickle_strings(data: bytes | Any, limit: int = 200_000) -> set[str]:
    """String constants of the first pickle in `data` (bytes or a binary file), read with
    pickletools.genops: opcodes are parsed, nothing is constructed or called."""
    import io

    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    found: set[str] = set()
    for n, (op, arg, _pos) in enumerate(pickletools.genops(stream)):
        if isinstance(arg, str):
            found.add(arg)
        if op.name == "STOP" or n > limit:
            break
    return found


def _main_pickle_strings(path: Path) -> set[str]:
    """Strings of the pickle holding the checkpoint dict (zip format or torch's legacy format)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith("data.pkl")]
            if not names:
                return set()
            return _pickle_strings(zf.read(names[0]))
    with open(path, "rb") as fh:  # legacy: magic number, protocol, sys info, then the object
        strings: set[str] = set()
        for _ in range(4):
            strings = _pickle_strings(fh)
        return strings


def is_original_checkpoint(path: str | Path) -> bool:
    """True when `path` looks like an original-tool `.chkpt` (has `model` and `settings`, no dasv tag).

    Only inspects the pickle's opcodes; never unpickles. False for anything unreadable.
    """
    path = Path(path)
    try:
        if not path.is_file():
            return False
        strings = _main_pickle_strings(path)
    except Exception:
        return False
    return "model" in strings and "settings" in strings and "dasv-checkpoint" not in strings


# --------------------------------------------------------------------------- restricted loading


def _refusal_reason(exc: Exception) -> str:
    text = str(exc)
    m = re.search(r"GLOBAL ([\w.]+)", text)
    if m:
        return f"it pickles `{m.group(1)}`, which is not a tensor, a plain value or argparse.Namespace"
    if "Unsupported operand" in text or "Unsupported opcode" in text:
        return "not a PyTorch checkpoint that the restricted loader can read (" + text.strip().splitlines()[-1][:120] + ")"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "weights_only" not in ln and "PyTorch 2.6" not in ln]
    return lines[0][:200] if lines else "unsupported pickled content"


def _restricted_load(path: Path) -> Any:
    """torch.load with weights_only=True (torch's restricted unpickler: tensors, storages, plain
    containers and values) admitting one extra class, argparse.Namespace."""
    import argparse
    import warnings

    import torch

    serialization = torch.serialization
    with warnings.catch_warnings():
        # old pickles use other protocols; torch warns about it, the loader stays restricted
        warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
        if hasattr(serialization, "safe_globals"):  # scoped: nothing global changes
            with serialization.safe_globals([argparse.Namespace]):
                return torch.load(path, map_location="cpu", weights_only=True)
        if hasattr(serialization, "add_safe_globals"):  # pragma: no cover - torch 2.4
            serialization.add_safe_globals([argparse.Namespace])
            return torch.load(path, map_location="cpu", weights_only=True)
    raise InputError(f"{path}: reading original checkpoints needs torch >= 2.4")  # pragma: no cover


def load_original(path: str | Path) -> dict[str, Any]:
    """Read an original `.chkpt` with the restricted unpickler; anything else -> one-line InputError."""
    import pickle

    path = require_file(path, "an original .chkpt file", "no such checkpoint")
    try:
        data = _restricted_load(path)
    except pickle.UnpicklingError as exc:
        raise InputError(f"{path}: refused to load: {_refusal_reason(exc)}") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read checkpoint ({exc.strerror or exc})") from None
    except Exception as exc:  # torch raises KeyError, struct.error, RuntimeError... on non-checkpoints
        from dasv_cli.io.checkpoint import unreadable_reason

        raise InputError(f"{path}: not a readable checkpoint: {unreadable_reason(exc)}") from None
    if isinstance(data, dict) and data.get("format") == "dasv-checkpoint":
        raise InputError(f"{path}: already a dasv checkpoint; nothing to convert")
    if not isinstance(data, dict) or "model" not in data:
        raise InputError(f"{path}: not an original checkpoint (expected a dict with 'model' and 'settings')")
    return data


# --------------------------------------------------------------------------- mapping


def _settings_dict(settings: Any, path: Path) -> dict[str, Any]:
    import argparse

    if settings is None:
        return {}
    if isinstance(settings, argparse.Namespace):
        settings = vars(settings)
    if not isinstance(settings, dict):
        raise InputError(f"{path}: 'settings' is a {type(settings).__name__}, expected an argparse.Namespace")
    return {str(k): v for k, v in settings.items()}


def _setting(value: Any) -> Any:
    """A setting as a plain value (numbers, strings, flat lists of them); anything else as its repr,
    so the stored settings always load with weights_only."""
    p = plain(value)
    if isinstance(p, _PLAIN) or (isinstance(p, list) and all(isinstance(v, _PLAIN) for v in p)):
        return p
    return repr(value)


def _features_recipe() -> dict[str, Any] | None:
    """The paper's log-mel recipe, which is the original tool's feature extractor."""
    try:
        from dasv_cli.dsp.logmel import LogMelConfig
    except ImportError:  # pragma: no cover - features module not installed
        return None
    return LogMelConfig().to_dict()


def convert_original(path: str | Path) -> dict[str, Any]:
    """An original `.chkpt` as a dasv checkpoint dict (numerics="original"), ready for save_checkpoint.

    Every tensor is checked against the shape the settings imply; a mismatch names the key. Whether
    dasv can build the network of those settings is for whoever builds it (ModelConfig says).
    """
    import torch

    from dasv_cli.io.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION

    path = Path(path)
    data = load_original(path)
    raw = data["model"]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise InputError(f"{path}: 'model' is not a state dict of tensors")
    sd = {(k[7:] if k.startswith("module.") else k): v for k, v in raw.items()}
    settings = _settings_dict(data.get("settings"), path)
    cfg = infer_config(sd, settings, path)
    state = map_state(sd, cfg, path)
    norm = settings.get("normalization", "cmn")
    if norm not in ("cmn", "cmvn"):
        norm = "cmn"
    plain_settings = {k: _setting(v) for k, v in settings.items()}
    step = data.get("step")
    epoch = data.get("epoch")
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": {
            "model": cfg,
            "train": {"original_settings": plain_settings},
            "features": {"norm": norm, "recipe": _features_recipe()},
        },
        "model": state,
        "optimizer": None,
        "speakers": None,
        "step": int(step) if isinstance(step, int) else 0,
        "epoch": int(epoch) if isinstance(epoch, int) else 0,
        "best_eer": None,
        "rng": None,
        "converted_from": str(path),
    }
