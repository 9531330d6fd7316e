"""The learning rate as a pure function of the update count: linear warm-up, then a decay.

lr(step) = learning_rate x plateau_scale x warm(step) x decay(step), for the update that follows
`step` updates:
- warm(step) = min(1, (step + 1) / lr_warmup) (1 without a warm-up), so the first update already moves;
- decay(step), with t = min(1, (step + 1 - lr_warmup) / (max_steps - lr_warmup)) once the warm-up is
  over (0 before): "constant" 1 (the paper's); "cosine" r + (1 - r)(1 + cos(pi t)) / 2; "exponential"
  r^t, where r = min_lr_ratio (the last update, step max_steps - 1, runs at learning_rate x r);
- plateau_scale: 0.5 per LR halving of the validation plateau rule (dasv_cli.train.plateau), kept
  in the run state.
Nothing here depends on the history of the run, so a resumed run sets exactly the learning rates an
uninterrupted one would.
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine", "exponential")


def decay(step: int, schedule: str, warmup: int, total: int, min_ratio: float) -> float:
    """The decay factor at `step` (1 for "constant"; `total` is the run's last update count)."""
    if schedule == "constant":
        return 1.0
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown LR schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    span = max(1, total - warmup)
    t = min(1.0, max(0.0, (step + 1 - warmup) / span))
    if schedule == "cosine":
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))
    return min_ratio ** t


def warm(step: int, warmup: int) -> float:
    """The warm-up factor at `step` (1 once `warmup` updates are done)."""
    return 1.0 if warmup <= 0 else min(1.0, (step + 1) / warmup)


def lr_at(step: int, base_lr: float, schedule: str = "constant", warmup: int = 0, total: int = 0,
          min_ratio: float = 0.01, plateau_scale: float = 1.0) -> float:
    """The learning rate of the update that follows `step` updates."""
    return base_lr * plateau_scale * warm(step, warmup) * decay(step, schedule, warmup, total, min_ratio)


def set_lr(optimizer, lr: float) -> None:
    """Give every parameter group of `optimizer` this learning rate."""
    for group in optimizer.param_groups:
        group["lr"] = lr


__all__ = ["SCHEDULES", "decay", "warm", "lr_at", "set_lr"]
