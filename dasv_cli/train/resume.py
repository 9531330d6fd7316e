"""The options of a resumed run: the ones stored in its last checkpoint, overridden only by the flags
given now (the network's options cannot change). Shared by `dasv train --resume` and `dasv demo`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from dasv_cli.errors import InputError, UsageError
from dasv_cli.train.config import MODEL_FIELDS, TrainConfig, config_from_dict
from dasv_cli.train.loop import load_run_checkpoint


def resumed_config(cfg: TrainConfig, given: dict[str, Any]) -> TrainConfig:
    """Resume: the run's stored options, overridden only by the flags typed now."""
    if not cfg.out:
        raise UsageError("--resume needs -o/--out (the run's directory), as a flag or in the config file")
    last = Path(cfg.out) / "last.pt"
    if not last.exists():
        raise InputError(f"{last}: no checkpoint to resume from")
    stored = load_run_checkpoint(last).get("config", {}).get("train")
    if not isinstance(stored, dict):
        raise InputError(f"{last}: the checkpoint holds no training options to resume with")
    base = config_from_dict(stored, str(last))
    changed = [k for k in MODEL_FIELDS if k in given and given[k] != getattr(base, k)]
    if changed:
        raise UsageError(f"--resume keeps the network of {last}; cannot change {', '.join('--' + c.replace('_', '-') for c in changed)}")
    merged = dataclasses.replace(base, **{k: v for k, v in given.items() if k != "resume"})
    merged.resume = True
    merged.out = cfg.out
    merged.check()
    return merged
