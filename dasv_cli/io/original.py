"""Checkpoints of the original research tool (DoubleAttentionSpeakerVerification, `.chkpt` files).

Such a file is a `torch.save`d dict: `model` (state dict of its SpeakerClassifier), `settings` (a
pickled argparse.Namespace of its command-line options), `optimizer`, `epoch`, `step`. It is read with
torch's restricted weights-only unpickler (tensors, plain containers and values) plus exactly one
extra admitted class, argparse.Namespace; any other pickled global (a function, a class) is refused
before anything runs. The state dict is mapped onto `SpeakerNet` with `numerics="original"`:

    front_end.convXY.{weight,bias}              -> front_end.convXY.*
    poolingLayer.utteranceAttention.query [d,H] -> pooling.utterance.query [H,d]   (Double MHA)
    poolingLayer.headsAttention.att [d,1]       -> pooling.head_query [d]          (Double MHA)
    poolingLayer.query [d,H]                    -> pooling.query [H,d]             (MHA)
    poolingLayer.att [D,1]                      -> pooling.query [D]               (Attention)
    fc1, fc2, preLayer                          -> fc1, fc2, pre
    b2 (BatchNorm)                              -> bn2
    b1, b3 (BatchNorms the original never applies) -> checked and dropped
    predictionLayer.W [E,N]                     -> am_softmax.weight [N,E]
"""

from __future__ import annotations

import pickletools
import re
import zipfile
from pathlib import Path
from typing import Any

from dasv_cli.errors import InputError

_POOLING_NAMES = {"DoubleMHA": "DoubleMHA", "MHA": "MHA", "Attention": "Attention", "Statistical": "Statistical"}
_DROPPED_PREFIXES = ("b1.", "b3.")
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

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such checkpoint")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected an original .chkpt file")
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


def _plain(value: Any) -> Any:
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, _PLAIN) for v in value):
        return list(value)
    return repr(value)


def _infer_config(sd: dict[str, Any], s: dict[str, Any], path: Path) -> dict[str, Any]:
    """ModelConfig fields from the settings, falling back to the tensor shapes."""

    def shape(key: str) -> tuple[int, ...]:
        if key not in sd:
            raise InputError(f"{path}: state dict has no '{key}'")
        return tuple(sd[key].shape)

    front_end = s.get("front_end") or ("VGG4L" if "front_end.conv41.weight" in sd else "VGG3L")
    if front_end not in ("VGG3L", "VGG4L"):
        raise InputError(f"{path}: front-end {front_end!r} is not supported (VGG3L or VGG4L)")
    last = "front_end.conv42.weight" if front_end == "VGG4L" else "front_end.conv32.weight"
    kernel_size = s.get("kernel_size") or shape(last)[0]
    pooling = s.get("pooling_method")
    if pooling is None:
        if "poolingLayer.utteranceAttention.query" in sd:
            pooling = "DoubleMHA"
        elif "poolingLayer.query" in sd:
            pooling = "MHA"
        elif "poolingLayer.att" in sd:
            pooling = "Attention"
        else:
            pooling = "Statistical"
    if pooling not in _POOLING_NAMES:
        raise InputError(
            f"{path}: pooling {pooling!r} is not supported by dasv (DoubleMHA, MHA, Attention, Statistical)"
        )
    heads = s.get("heads_number")
    if heads is None:
        key = {"DoubleMHA": "poolingLayer.utteranceAttention.query", "MHA": "poolingLayer.query"}.get(pooling)
        heads = shape(key)[1] if key else 32
    embedding_size = s.get("embedding_size") or shape("fc1.weight")[0]
    w = shape("predictionLayer.W")
    if len(w) != 2:
        raise InputError(f"{path}: tensor 'predictionLayer.W' has shape {list(w)}, expected [embedding, speakers]")
    num_speakers = w[1]
    try:
        return _config_fields(front_end, kernel_size, pooling, heads, embedding_size, num_speakers, s)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: unreadable network settings ({exc})") from None


def _config_fields(front_end: str, kernel_size: Any, pooling: str, heads: Any, embedding_size: Any,
                   num_speakers: int, s: dict[str, Any]) -> dict[str, Any]:
    return {
        "front_end": front_end,
        "kernel_size": int(kernel_size),
        "pooling": _POOLING_NAMES[pooling],
        "heads": int(heads),
        "mask_prob": float(s.get("mask_prob", 0.3)),
        "embedding_size": int(embedding_size),
        "n_mels": int(s.get("feature_size", 80)),
        "num_speakers": int(num_speakers),
        "scale": float(s.get("scalingFactor", 30.0)),
        "margin": float(s.get("marginFactor", 0.4)),
        "annealing": bool(s.get("annealing", False)),
        "numerics": "original",
    }


def _source_key(dasv_key: str, pooling: str) -> tuple[str, str]:
    """The original name of a SpeakerNet (numerics="original") state-dict entry, and how its layout
    differs: "same", "transpose" (2-D, swapped) or "column" ([n, 1] in the original, [n] in dasv)."""
    if dasv_key.startswith(("front_end.", "fc1.", "fc2.")):
        return dasv_key, "same"
    if dasv_key.startswith("bn2."):
        return "b2." + dasv_key[4:], "same"
    if dasv_key.startswith("pre."):
        return "preLayer." + dasv_key[4:], "same"
    if dasv_key == "am_softmax.weight":
        return "predictionLayer.W", "transpose"
    if dasv_key == "pooling.utterance.query":
        return "poolingLayer.utteranceAttention.query", "transpose"
    if dasv_key == "pooling.head_query":
        return "poolingLayer.headsAttention.att", "column"
    if dasv_key == "pooling.query":
        return ("poolingLayer.att", "column") if pooling == "Attention" else ("poolingLayer.query", "transpose")
    raise KeyError(dasv_key)


def _original_shape(dasv_shape: tuple[int, ...], layout: str) -> list[int]:
    if layout == "transpose":
        return list(reversed(dasv_shape))
    if layout == "column":
        return [*dasv_shape, 1]
    return list(dasv_shape)


def _features_recipe() -> dict[str, Any] | None:
    """The paper's log-mel recipe, which is the original tool's feature extractor."""
    try:
        from dasv_cli.dsp.logmel import LogMelConfig
    except ImportError:  # pragma: no cover - features module not installed
        return None
    return LogMelConfig().to_dict()


def convert_original(path: str | Path) -> dict[str, Any]:
    """An original `.chkpt` as a dasv checkpoint dict (numerics="original"), ready for save_checkpoint.

    Every tensor is checked against the shape the settings imply; a mismatch names the key.
    """
    import torch

    from dasv_cli.io.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
    from dasv_cli.model.network import ModelConfig, SpeakerNet

    path = Path(path)
    data = load_original(path)
    raw = data["model"]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise InputError(f"{path}: 'model' is not a state dict of tensors")
    sd = {(k[7:] if k.startswith("module.") else k): v for k, v in raw.items()}
    settings = _settings_dict(data.get("settings"), path)
    fields = _infer_config(sd, settings, path)
    try:
        cfg = ModelConfig(**fields)
    except ValueError as exc:
        raise InputError(f"{path}: unsupported network settings: {exc}") from None
    with torch.device("meta"):
        expected = SpeakerNet(cfg).state_dict()

    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for key, ref in expected.items():
        src, layout = _source_key(key, cfg.pooling)
        if src not in sd:
            if src.endswith("num_batches_tracked"):  # absent in checkpoints of very old torch
                state[key] = torch.zeros((), dtype=torch.long)
                continue
            raise InputError(f"{path}: state dict has no '{src}' (needed for {cfg.front_end}/{cfg.pooling})")
        want = _original_shape(tuple(ref.shape), layout)
        tensor = sd[src]
        if list(tensor.shape) != want:
            raise InputError(
                f"{path}: tensor '{src}' has shape {list(tensor.shape)}, expected {want} for "
                f"{cfg.front_end} K={cfg.kernel_size} {cfg.pooling} heads={cfg.heads} embedding={cfg.embedding_size}"
            )
        if layout == "transpose":
            tensor = tensor.t()
        elif layout == "column":
            tensor = tensor.reshape(-1)
        state[key] = tensor.detach().to(dtype=ref.dtype).contiguous().clone()
        used.add(src)

    e = cfg.embedding_size
    for key in sorted(set(sd) - used):
        if key.startswith(_DROPPED_PREFIXES):
            t = sd[key]
            if t.dim() == 1 and t.shape[0] != e:
                raise InputError(f"{path}: tensor '{key}' has shape {list(t.shape)}, expected [{e}]")
            continue
        raise InputError(f"{path}: unexpected tensor '{key}' in the state dict (not part of the original network)")

    norm = settings.get("normalization", "cmn")
    if norm not in ("cmn", "cmvn"):
        norm = "cmn"
    plain_settings = {k: _plain(v) for k, v in settings.items()}
    step = data.get("step")
    epoch = data.get("epoch")
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": {
            "model": cfg.to_dict(),
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
