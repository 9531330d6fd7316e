"""Which options a resumed run takes from its checkpoint and which from the command line.

`dasv train -o RUN --resume` continues RUN/last.pt with the options stored in it; flags typed now
override them (more steps, another validation interval, a new learning rate), except the network
options, which the stored weights fix. A config file is not read again: only `out` may come from it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from dasv_cli.errors import InputError, UsageError
from dasv_cli.io.paths import require_file
from dasv_cli.train.config import MODEL_FIELDS, TrainConfig, config_from_dict
from dasv_cli.train.state import BEST, LAST, load_run_checkpoint


def merge_resumed(stored: dict[str, Any], given: dict[str, Any], out: str, where: str) -> TrainConfig:
    """The stored training options (a checkpoint's config["train"]) with the `given` flags applied.

    `given` holds only the flags typed now. Changing a network option is a UsageError naming the
    flags; the result resumes into `out` and is checked like any config.
    """
    base = config_from_dict(stored, where)
    changed = [k for k in MODEL_FIELDS if k in given and given[k] != getattr(base, k)]
    if changed:
        raise UsageError(f"--resume keeps the network of {where}; cannot change "
                         f"{', '.join('--' + c.replace('_', '-') for c in changed)}")
    merged = dataclasses.replace(base, **{k: v for k, v in given.items() if k != "resume"})
    merged.resume = True
    merged.out = out
    merged.check()
    return merged


def resumed_config(cfg: TrainConfig, given: dict[str, Any]) -> TrainConfig:
    """Resume: the run's stored options in OUT/last.pt, overridden only by the flags typed now."""
    if not cfg.out:
        raise UsageError("--resume needs -o/--out (the run's directory), as a flag or in the config file")
    last = require_file(Path(cfg.out) / LAST, "a checkpoint file", "no checkpoint to resume from")
    try:
        stored = load_run_checkpoint(last).get("config", {}).get("train")
    except InputError as exc:
        raise InputError(exc.message + _way_on(Path(cfg.out))) from exc
    if not isinstance(stored, dict):
        raise InputError(f"{last}: the checkpoint holds no training options to resume with")
    return merge_resumed(stored, given, cfg.out, str(last))


def _way_on(out: Path) -> str:
    """What to do when OUT/last.pt cannot be read: the run's best.pt, when there is one, still can be."""
    best = out / BEST
    if best.is_file():
        return (f"; {best} may still be whole: resume from it (copy it over {LAST}, keeping the damaged one "
                f"aside) or start a new run from its weights with --init-from {best}")
    return "; without a readable checkpoint in the run, start a new run (--init-from CKPT takes any other model's weights)"


__all__ = ["merge_resumed", "resumed_config"]
