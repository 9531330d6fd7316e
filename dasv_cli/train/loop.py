"""The training loop: the paper's recipe, resumable, logged, safe against non-finite batches.

One `Trainer` runs in every process (one process on a laptop; one per GPU or CPU rank under DDP).
Rank 0 validates, writes checkpoints and logs; the others wait at the collective that follows.

How the original tool (miquelindia90/DoubleMHA, scripts/train.py) is followed, and where it is not:
- cross-entropy on AM-Softmax logits, accuracy of the margin-free logits, an update every
  `grad_accumulation` batches, validation EER every `validate_every` updates, the model kept when the
  EER improves (`best.pt`); LR halving and early stopping as in dasv_cli.train.plateau;
- non-finite losses are skipped before they touch weights or BatchNorm statistics (the original
  applied them); validation uses the exact EER (the original swept a 0.01 threshold grid).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from dasv_cli import progress
from dasv_cli.devices import resolve_device
from dasv_cli.errors import EXIT_INTERRUPTED, DasvError
from dasv_cli.train import state as run_state
from dasv_cli.train.config import TrainConfig
from dasv_cli.train.config_text import format_config
from dasv_cli.train.inputs import TrainData, open_store, prepare_data
from dasv_cli.train.network import build_model, check_window, make_optimizer, train_step
from dasv_cli.train.plateau import exhausted, judge
from dasv_cli.train.ranks import RunContext, data_parallel, final_sync
from dasv_cli.train.runlog import RunLog, Window
from dasv_cli.train.signals import Interrupts
from dasv_cli.train.state import BEST, LAST, RunState
from dasv_cli.train.update import DivergedError, GuardedUpdates, parse_fault

@dataclass
class TrainResult:
    step: int
    epoch: int
    best_eer: float | None
    reason: str  # "max_steps" | "max_minutes" | "max_epochs" | "early_stopping" | "interrupted"
    skipped: int
    out: Path
    exit_code: int = 0


class Trainer:
    """One process's share of a training run. `run()` returns a TrainResult (or raises DasvError)."""

    def __init__(self, cfg: TrainConfig, data: TrainData, ctx: RunContext | None = None) -> None:
        self.cfg = cfg
        self.data = data
        self.ctx = ctx or RunContext(device=resolve_device(cfg.device))
        self.out = Path(cfg.out)
        self.state = RunState()
        self.interrupts = Interrupts(announce=self.ctx.is_main, distributed=self.ctx.distributed)
        self.runlog = RunLog()
        self.window = Window()
        self._fault = parse_fault(os.environ.get("DASV_TRAIN_FAULT", ""))
        self._valid_store = None
        self._valid_seconds = 0.0
        self._validated_step = -1
        self._bar = self._task = None

    def log(self, message: str) -> None:
        if self.ctx.is_main:
            progress.log(message)

    # -- set-up (the order is the RNG's: a resumed run must draw what an uninterrupted one would) --
    def setup(self) -> None:
        import torch

        cfg, ctx = self.cfg, self.ctx
        run_state.seed_process(cfg.seed, ctx)
        self.model = build_model(cfg, self.data.num_speakers, self.data.n_mels).to(ctx.device)
        check_window(cfg, self.model.min_frames)
        if cfg.channels_last:  # on a GPU, and on a CPU with AMX under bf16 (ResNet34 trains 4-5x faster there)
            self.model = self.model.to(memory_format=torch.channels_last)
        if cfg.init_from and not cfg.resume:
            run_state.init_weights(cfg.init_from, cfg, self.data, self.model, ctx)
        self.optimizer = make_optimizer(cfg, self.model)
        resumed = None
        if cfg.resume:
            self.state, resumed = run_state.restore(self.out / LAST, cfg, self.data, self.model, self.optimizer, ctx)
        run_state.seed_rank(cfg.seed, ctx)
        if resumed is not None:
            run_state.restore_rng(resumed.get("rng"), ctx)
        self.step_module = data_parallel(train_step(self.model, cfg.compile), ctx)
        self._build_loader()
        self.amp_dtype = torch.bfloat16 if cfg.precision == "bf16" else None
        online = None
        if cfg.online_augment:
            from dasv_cli.train.online import OnlineFeatures

            online = OnlineFeatures(cfg, self.data.sources, self.data.recipe, ctx.rank)
        self.updates = GuardedUpdates(cfg, ctx, self.model, self.optimizer, self.state, self.out, self._fault, online)

    def _build_loader(self) -> None:
        from dasv_cli.train.loader import make_loader
        from dasv_cli.train.windows import WindowBatchSampler, WindowDataset

        cfg, ctx = self.cfg, self.ctx
        self.dataset = WindowDataset(cfg.features, self.data.keys, self.data.labels, self.data.lengths, cfg.norm,
                                     store=self.data.store, rows=self.data.rows, waveform=bool(cfg.online_augment))
        self.sampler = WindowBatchSampler(self.data.lengths, cfg.batch_size, cfg.window_frames, cfg.seed,
                                          ctx.rank, ctx.world, cfg.random_slicing)
        self.loader = make_loader(self.dataset, self.sampler, cfg.workers, cfg.seed, ctx.rank,
                                  pin_memory=ctx.device.startswith("cuda"))

    def save(self, *names: str, extra: dict | None = None) -> None:
        """Write OUT/NAME for each name on rank 0 (every rank takes part: the RNG states are gathered)."""
        from dasv_cli.io.checkpoint import save_checkpoint

        ckpt = run_state.checkpoint_dict(self.cfg, self.data, self.model, self.optimizer, self.state, self.ctx)
        if extra:
            ckpt.update(extra)
        if self.ctx.is_main:
            for name in names:
                save_checkpoint(self.out / name, ckpt)
        self.ctx.barrier()

    # -- one batch -----------------------------------------------------------------------------
    def compute_logits(self, feats, labels):
        """Logits for one batch (tests override this to inject faults)."""
        import contextlib

        import torch

        if self.amp_dtype is None:
            ctx = contextlib.nullcontext()
        else:
            ctx = torch.autocast(device_type=torch.device(self.ctx.device).type, dtype=self.amp_dtype)
        with ctx:
            return self.step_module(feats, labels, self.state.step)

    # -- reports and validation ----------------------------------------------------------------
    def _report(self) -> None:
        loss, correct, count, batches, samples = self.ctx.all_reduce(self.window.sums())
        elapsed = max(time.time() - self.window.t0, 1e-9)
        if self.ctx.is_main and batches > 0:
            lr = self.optimizer.param_groups[0]["lr"]
            record = {"step": self.state.step, "epoch": self.state.epoch, "loss": loss / batches,
                      "accuracy": 100.0 * correct / max(count, 1), "lr": lr,
                      "samples_per_s": samples / elapsed, "skipped": self.state.skipped}
            self.runlog.record(record)
            self.log(f"step {self.state.step} epoch {self.state.epoch}: loss {record['loss']:.4f}  accuracy "
                     f"{record['accuracy']:.2f}%  lr {lr:.3g}  {record['samples_per_s']:.1f} samples/s")
        self.window.reset()

    def validate(self) -> None:
        """Rank 0 scores the trials; all ranks then apply the same LR/early-stopping decision."""
        st = self.state
        eer = dcf1 = dcf5 = float("nan")
        if self.ctx.is_main:
            from dasv_cli.eval.validation import evaluate_trials

            t0 = time.time()
            if self._valid_store is None:  # the run's store when validation reads the training features
                self._valid_store = self.data.valid or open_store(self.data.valid_store)
            self.model.eval()
            try:
                metrics = evaluate_trials(self.model, self._valid_store, self.data.trials, norm=self.cfg.norm,
                                          device=self.ctx.device)
            finally:
                self.model.train()
            eer, dcf1, dcf5 = float(metrics.eer), float(metrics.min_dcf_p01), float(metrics.min_dcf_p05)
            self._valid_seconds = time.time() - t0
        eer, dcf1, dcf5 = self.ctx.broadcast([eer, dcf1, dcf5])
        self._validated_step = st.step
        st.last_eer = eer
        verdict = judge(eer, st.best_eer, st.stopping, self.cfg.lr_patience)
        st.best_eer, st.stopping = verdict.best_eer, verdict.stopping
        if verdict.halve:
            st.lr_scale *= 0.5
            for group in self.optimizer.param_groups:
                group["lr"] *= 0.5
        if self.ctx.is_main:
            lr = self.optimizer.param_groups[0]["lr"]
            self.runlog.record({"step": st.step, "epoch": st.epoch, "eer": eer, "min_dcf_p01": dcf1,
                                "min_dcf_p05": dcf5, "best_eer": st.best_eer, "lr": lr})
            note = "new best" if verdict.improved else f"{st.stopping} validation(s) without gain"
            self.log(f"validation step {st.step}: EER {eer:.2f}%  minDCF(0.01) {dcf1:.3f}  "
                     f"minDCF(0.05) {dcf5:.3f}  ({note}; {self._valid_seconds:.1f} s)"
                     + (f"; learning rate halved to {lr:.3g}" if verdict.halve else ""))
        self.save(*((BEST, LAST) if verdict.improved else (LAST,)))

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        cfg = self.cfg
        self.setup()
        if self.ctx.is_main:
            self.runlog = self.updates.runlog = RunLog.open(self.out, self.state.step, cfg.resume)
        self.interrupts.install()
        self._announce()
        started = time.time()
        first_step = self.state.step
        self.window.reset()
        try:
            self._start_bar()
            self.optimizer.zero_grad(set_to_none=True)
            reason = "max_steps" if self._steps_done() else None
            while reason is None and self.state.epoch < cfg.max_epochs:
                reason = self._epoch(started)
            reason = reason or "max_epochs"
            self._finish(reason, first_step)
        except DivergedError:
            self.save(LAST)  # the weights never saw the bad batches: keep what was learnt
            raise
        except RuntimeError as exc:
            if "DataLoader timed out" not in str(exc):
                raise
            raise self._loader_timeout() from exc
        finally:
            self._close()
        return TrainResult(step=self.state.step, epoch=self.state.epoch, best_eer=self.state.best_eer,
                           reason=reason, skipped=self.state.skipped, out=self.out,
                           exit_code=EXIT_INTERRUPTED if reason == "interrupted" else 0)

    def _epoch(self, started: float) -> str | None:
        """The (rest of the) current epoch; the reason to stop, or None when the epoch ran out."""
        self.sampler.set_epoch(self.state.epoch, skip=self.state.epoch_batch)
        for feats, labels, *info in self.loader:  # info: a waveform batch's WaveInfo (--online-augment)
            if self.updates.feed(self.compute_logits, feats, labels, self.window, *info):
                reason = self._after_update(started)
                if reason is not None:
                    return reason
        self.state.epoch += 1
        self.state.epoch_batch = 0
        return None

    def _after_update(self, started: float) -> str | None:
        """Report, validate and save as scheduled; then the reason to stop, if there is one."""
        cfg, step = self.cfg, self.state.step
        if self._fault == ("crash", self.ctx.rank, step):
            raise RuntimeError(f"injected fault (DASV_TRAIN_FAULT) on rank {self.ctx.rank} at step {step}")
        self._update_bar(completed=step)
        if step % cfg.print_every == 0:
            self._report()
        validated = cfg.has_validation and step % cfg.validate_every == 0
        if validated:
            t_valid = time.time()
            self.validate()
            self.window.pause(time.time() - t_valid)  # samples/s counts training time only
            self._update_bar()
        reason = self._stop_reason(started)
        if reason is None and not validated and step % cfg.save_every == 0:
            self.save(LAST)
        return reason

    def _steps_done(self) -> bool:
        return bool(self.cfg.max_steps) and self.state.step >= self.cfg.max_steps

    def _stop_reason(self, started: float) -> str | None:
        """Every rank agrees: a Ctrl-C or the time limit on any rank stops them all."""
        cfg = self.cfg
        out_of_time = bool(cfg.max_minutes) and time.time() - started > cfg.max_minutes * 60
        stop, timeout = self.ctx.all_reduce([1.0 if self.interrupts.count else 0.0, float(out_of_time)], "max")
        if stop > 0:
            return "interrupted"
        if timeout > 0:
            return "max_minutes"
        if self._steps_done():
            return "max_steps"
        if exhausted(self.state.stopping, cfg.early_stopping):
            return "early_stopping"
        return None

    def _finish(self, reason: str, first_step: int) -> None:
        st, ctx = self.state, self.ctx
        # A run that ends between validations is validated once more, so that its last EER (and
        # best.pt) describe the final weights.
        if (self.cfg.has_validation and reason in ("max_steps", "max_minutes", "max_epochs")
                and st.step > first_step and self._validated_step != st.step):
            self.validate()
        # Identical buffers everywhere, a digest per rank as proof, and last.pt.
        digests = final_sync(self.model, ctx)
        if digests and ctx.is_main:
            self.log(f"{'all' if len(set(digests)) == 1 else 'NOT all'} {ctx.world} ranks hold identical weights "
                     f"(sha256 {digests[0][:12]}...)")
        self.save(LAST, extra={"rank_digests": digests} if digests else None)
        best = f", best EER {st.best_eer:.2f}%" if st.best_eer is not None else ""
        self.log(f"stopped ({reason}) at step {st.step}, epoch {st.epoch}{best}; "
                 f"{st.skipped} non-finite batch(es) skipped; checkpoints in {self.out}")

    # -- around the loop -----------------------------------------------------------------------
    def _announce(self) -> None:
        cfg, world = self.cfg, self.ctx.world
        accum = cfg.grad_accumulation
        self.log(f"effective batch: {cfg.batch_size} per process x {world} process(es) x {accum} accumulation = "
                 f"{cfg.batch_size * world * accum}")
        self.log(f"training on {self.ctx.device}: {len(self.data.keys)} utterances, {self.data.num_speakers} "
                 f"speakers, {len(self.sampler.plan())} batches per epoch per process")

    def _start_bar(self) -> None:
        if not self.ctx.is_main:
            return
        from rich.progress import TextColumn

        self._bar = progress.make_progress(TextColumn("{task.fields[info]}"))
        self._bar.start()
        self._task = self._bar.add_task("train", total=self.cfg.max_steps or None, completed=self.state.step, info="")

    def _update_bar(self, **fields) -> None:
        if self._bar is not None:
            self._bar.update(self._task, info=self.window.info(self.ctx.world, self.state.last_eer), **fields)

    def _loader_timeout(self) -> DasvError:
        """A data loader that sent nothing, as one line with the fix."""
        from dasv_cli.train.loader import LOADER_TIMEOUT_S

        return DasvError(
            f"the data loader workers sent no batch for {LOADER_TIMEOUT_S} s (is /dev/shm full? "
            f"rerun with --workers 0, or give the container more shared memory)"
            + (f"; {self.out / LAST} holds the last saved state (continue with --resume)"
               if (self.out / LAST).exists() else "")
        )

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        self.interrupts.restore()
        self.runlog.close()
        if self._valid_store is not None:
            self._valid_store.close()
        it = getattr(self.loader, "_iterator", None)  # stop persistent workers now, not at exit
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
            self.loader._iterator = None
        self.dataset.close()


def train(cfg: TrainConfig, ctx: RunContext | None = None, data: TrainData | None = None,
          trainer_cls: type[Trainer] = Trainer) -> TrainResult:
    """Check the inputs, print the resolved config, and run the loop in this process."""
    ctx = ctx or RunContext(device=resolve_device(cfg.device))
    if data is None:
        data = prepare_data(cfg, ctx.world)
    if ctx.is_main:
        run_state.check_output(cfg)
        progress.log(format_config(cfg).rstrip())
    return trainer_cls(cfg, data, ctx).run()


__all__ = ["TrainResult", "Trainer", "train"]
