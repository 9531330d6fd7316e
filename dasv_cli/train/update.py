"""Micro-batches into optimizer updates, with the non-finite guard.

A batch whose loss is non-finite on any rank is skipped by every rank (DDP needs them to agree)
before it touches the weights, and the BatchNorm statistics its forward moved are put back (the
original tool applied such batches). When some micro-batches of an update were skipped, the
gradients are averaged over the good ones; a non-finite gradient skips the update. `max_nonfinite`
skips in a row end the run with DivergedError (the caller saves the last good state).
Before each update the learning rate is set from the schedule (train/schedule.py); with
--spec-augment each micro-batch is masked on its device (train/specaugment.py). Both are pure
functions of the update count, so resuming stays exact.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from dasv_cli import progress
from dasv_cli.errors import DasvError
from dasv_cli.train.config import TrainConfig
from dasv_cli.train.ranks import RunContext
from dasv_cli.train.runlog import RunLog, Window
from dasv_cli.train.schedule import lr_at, set_lr
from dasv_cli.train.specaugment import spec_augment
from dasv_cli.train.state import LAST, RunState


class DivergedError(DasvError):
    """The loss kept coming out non-finite: the run is stopped (last good state saved)."""


def parse_fault(spec: str) -> tuple[str, int, int] | None:
    """Fault injection for the distributed tests (DASV_TRAIN_FAULT):
    "RANK:STEP" raises on that rank after update STEP; "nan:RANK:STEP" makes that rank's first
    batch after update STEP all-NaN (its forward would poison BatchNorm statistics)."""
    if not spec:
        return None
    parts = spec.split(":")
    kind = parts.pop(0) if parts and parts[0] == "nan" else "crash"
    try:
        rank, step = (int(x) for x in parts)
    except ValueError:
        return None
    return kind, rank, step


class GuardedUpdates:
    """Feeds micro-batches to the model; every `grad_accumulation` of them make one update."""

    def __init__(self, cfg: TrainConfig, ctx: RunContext, model, optimizer, state: RunState, out: Path,
                 fault: tuple[str, int, int] | None = None, online: Callable | None = None) -> None:
        self.cfg, self.ctx, self.model, self.optimizer, self.state = cfg, ctx, model, optimizer, state
        self.online = online  # train.online.OnlineFeatures with --online-augment: waveforms in, features out
        self.out = out
        self.fault = fault
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.buffers = list(model.buffers())
        self.runlog = RunLog()  # the run's open log, once there is one (for the skip count)
        self.pending = 0  # good micro-batches accumulated since the last update
        self.in_group = 0  # micro-batches seen since the last update
        self.consecutive_bad = 0

    def margin_free_correct(self, logits, labels):
        """Correct predictions of the margin-free logits (what the original tool's accuracy used),
        as a 0-d float tensor on the device (no sync)."""
        import torch

        with torch.no_grad():
            plain_logits = self.model.am_softmax.margin_free(logits, labels, self.state.step)
            return (plain_logits.argmax(dim=1) == labels).sum().float()

    def feed(self, logits_of: Callable, feats, labels, window: Window, info=None) -> bool:
        """Forward and backward one batch (`logits_of(feats, labels)`), unless its loss is non-finite
        on any rank. True when the batch completed an update. With online augmentation `feats` are
        waveform windows (and `info` their train.online.WaveInfo): augmented and featurised here, on
        the device, keyed by (seed, rank, step, micro-batch) as SpecAugment is."""
        import torch

        ctx, st, accum = self.ctx, self.state, self.cfg.grad_accumulation
        feats = feats.to(ctx.device, non_blocking=True)
        labels = labels.to(ctx.device, non_blocking=True)
        if self.online is not None:
            feats = self.online(feats, info, st.step, self.in_group)
        if self.fault == ("nan", ctx.rank, st.step) and self.in_group == 0:
            feats = torch.full_like(feats, float("nan"))
        if self.cfg.spec_augment:
            feats = spec_augment(feats, self.cfg.seed, ctx.rank, st.step, self.in_group)
        snapshot = [b.detach().clone() for b in self.buffers]
        logits = logits_of(feats, labels)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        # One host sync per batch, before backward is queued, so the next batch's work can be
        # issued while the GPU runs this one's backward.
        loss_value, correct = torch.stack([loss.detach(), self.margin_free_correct(logits, labels)]).tolist()
        bad = ctx.all_reduce([0.0 if math.isfinite(loss_value) else 1.0], "max")[0] > 0
        st.epoch_batch += 1
        self.in_group += 1
        if bad:
            with torch.no_grad():
                for b, s in zip(self.buffers, snapshot):
                    b.copy_(s)
            del logits, loss
            self.skip(f"non-finite loss at step {st.step} (epoch {st.epoch}, batch {st.epoch_batch})")
        else:
            self.consecutive_bad = 0
            (loss / accum).backward()
            self.pending += 1
            window.add(loss_value, correct, labels.shape[0])
        if self.in_group < accum:
            return False
        self.in_group = 0
        pending, self.pending = self.pending, 0
        return self._apply(pending, accum)

    def _apply(self, pending: int, accum: int) -> bool:
        """Apply the accumulated gradients; False when nothing (finite) was accumulated."""
        import torch

        if pending == 0:
            self.optimizer.zero_grad(set_to_none=True)
            return False
        if pending < accum:  # some micro-batches were skipped: average over the good ones
            for p in self.params:
                if p.grad is not None:
                    p.grad.mul_(accum / pending)
        norm = torch.nn.utils.clip_grad_norm_(self.params, float("inf"))
        if not math.isfinite(float(norm)):
            self.optimizer.zero_grad(set_to_none=True)
            self.skip(f"non-finite gradient at step {self.state.step}")
            return False
        cfg, st = self.cfg, self.state
        set_lr(self.optimizer, lr_at(st.step, cfg.learning_rate, cfg.lr_schedule, cfg.lr_warmup, cfg.max_steps,
                                     cfg.min_lr_ratio, st.lr_scale))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        st.step += 1
        return True

    def skip(self, what: str) -> None:
        st = self.state
        st.skipped += 1
        self.consecutive_bad += 1
        if self.ctx.is_main:
            progress.warn(f"{what}: batch skipped ({st.skipped} so far)")
            self.runlog.scalar("train/skipped", st.skipped, st.step)
        if self.consecutive_bad >= self.cfg.max_nonfinite:
            raise DivergedError(
                f"training diverged: {self.consecutive_bad} batches in a row gave a non-finite loss "
                f"(step {st.step}); {self.out / LAST} holds the last good state; try a lower "
                f"--learning-rate or --precision fp32"
            )


__all__ = ["DivergedError", "GuardedUpdates", "parse_fault"]
