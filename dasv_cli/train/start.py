"""From `dasv train`'s flags to a run: resolve the options, apply the resume policy, then train (in
this process, in N local ranks, or as one rank of an external torchrun) or only describe the run."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from dasv_cli import progress
from dasv_cli.errors import InputError, UsageError
from dasv_cli.train.config import TrainConfig, resolve_config
from dasv_cli.train.config_text import format_config
from dasv_cli.train.resume import resumed_config


def start(flags: dict[str, Any], config_file: str | None = None, dry_run: bool = False,
          debug: bool = False) -> int:
    """Train with these flags (None = not given) over `config_file` / ./dasv.toml; the exit code."""
    given = {k: v for k, v in flags.items() if v is not None}
    if given.get("resume") and given.get("init_from"):
        raise UsageError("--init-from starts a new run from a model's weights and --resume continues a run: "
                         "give one of them")
    cfg, source = resolve_config(flags, config_file)
    if source is not None and os.environ.get("RANK", "0") == "0":
        progress.log(f"options from {source}")
    if cfg.resume:
        cfg = resumed_config(cfg, given)
    elif cfg.init_from:
        cfg = initial_network(cfg, given)
    if dry_run:
        return describe_run(cfg)
    from dasv_cli.train.distributed import run_training

    return run_training(cfg, debug=debug)


def initial_network(cfg: TrainConfig, given: dict[str, Any]) -> TrainConfig:
    """--init-from: the network's shape options (sizes, pooling, numerics) come from the checkpoint
    unless typed now; the training options (margin, window, LR...) are this run's own."""
    from dasv_cli.model.config import options
    from dasv_cli.train.state import load_run_checkpoint

    stored = (load_run_checkpoint(cfg.init_from).get("config") or {}).get("model")
    if not isinstance(stored, dict):
        raise InputError(f"{cfg.init_from}: the checkpoint holds no network options")
    shape = {f.name: stored[f.name] for f in options("shape") if f.name in stored and f.name not in given}
    out = dataclasses.replace(cfg, **shape)
    out.check()
    return out


def describe_run(cfg: TrainConfig) -> int:
    """--dry-run: the resolved config as TOML on stdout (what `--config` reads back), the model summary
    and the effective batch on stderr; nothing is written. What a run needs is checked as a run would."""
    from dasv_cli.io.lists import read_train_labels
    from dasv_cli.train.network import build_model, model_summary

    cfg.check_paths()
    model = build_model(cfg, read_train_labels(cfg.train_labels).num_classes)
    progress.stdout_write(format_config(cfg))
    progress.log(model_summary(model), force=True)
    world = cfg.world_size_requested()
    progress.log(f"effective batch: {cfg.batch_size} x {world} process(es) x {cfg.grad_accumulation} accumulation = "
                 f"{cfg.batch_size * world * cfg.grad_accumulation}", force=True)
    return 0


__all__ = ["start", "initial_network", "describe_run"]
