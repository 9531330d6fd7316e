"""The training loop: the paper's recipe, resumable, logged, safe against non-finite batches.

One `Trainer` runs in every process (one process on a laptop; one per GPU or CPU rank under DDP).
Rank 0 validates, writes checkpoints and logs; the others wait at the collective that follows.

How the original tool (miquelindia90/DoubleMHA, scripts/train.py) is followed, and where it is not:
- cross-entropy on AM-Softmax logits, accuracy of the margin-free logits, an update every
  `grad_accumulation` batches, validation EER every `validate_every` updates, the model kept when the
  EER improves (`best.pt`);
- LR halving and early stopping count validations without gain, as the original did, but they are
  decided right after each validation instead of at epoch ends (the original checked
  `(stopping + 1) % 15 == 0` once per epoch, so the LR was halved when 14 validations had passed
  without gain, and again at every further epoch end while that count stood; with VoxCeleb2's
  epochs shorter than a validation interval that halved several times in a row). Here the LR is
  halved each time the count reaches a multiple of `lr_patience` (15), for every optimizer (the
  original skipped RMSprop), and the run stops once the count exceeds `early_stopping` (25), the
  original's `stopping > early_stopping` test;
- non-finite losses are skipped before they touch weights or BatchNorm statistics (the original
  applied them); validation uses the exact EER (the original swept a 0.01 threshold grid).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dasv_cli import progress
from dasv_cli.errors import EXIT_INTERRUPTED, DasvError, InputError, UsageError
from dasv_cli.train.config import TrainConfig, format_config, model_config_dict

LAST = "last.pt"
BEST = "best.pt"
METRICS = "metrics.jsonl"


class DivergedError(DasvError):
    """The loss kept coming out non-finite: the run is stopped (last good state saved)."""


# --------------------------------------------------------------------------------------------------
# Inputs, checked before any training


@dataclass
class TrainData:
    """Everything about the inputs that training needs, checked up front."""

    keys: list[str]
    labels: np.ndarray
    speakers: list[str] | None
    num_speakers: int
    lengths: np.ndarray
    recipe: dict[str, Any]
    n_mels: int
    trials: Any = None  # dasv_cli.io.lists.Trials or None
    valid_store: str | None = None


def _first(items: list[str], n: int = 3) -> str:
    shown = ", ".join(items[:n])
    return shown + (", ..." if len(items) > n else "")


def plain(value: Any) -> Any:
    """HDF5 attrs and numpy values -> plain Python (so a checkpoint loads with weights_only)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _open_store(path: str):
    from dasv_cli.io.shards import FeatureStore

    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such feature store (make one with `dasv features`)")
    return FeatureStore(path)


def prepare_data(cfg: TrainConfig, world: int = 1) -> TrainData:
    """Read and cross-check labels, features and trials; every problem is a one-line InputError."""
    from dasv_cli.io.lists import read_train_labels, read_trial_pair, read_trials
    from dasv_cli.io.shards import check_recipe

    cfg.check_paths()
    labels = read_train_labels(cfg.train_labels)
    if labels.num_classes < 2:
        raise InputError(f"{cfg.train_labels}: only {labels.num_classes} speaker; training needs at least 2")
    store = _open_store(cfg.features)
    try:
        if len(store) == 0:
            raise InputError(f"{cfg.features}: the feature store is empty")
        missing = [k for k in labels.keys if k not in store]
        if missing:
            raise InputError(
                f"{cfg.train_labels}: {len(missing)} of {len(labels.keys)} keys are not in the feature store "
                f"{cfg.features} (first: {_first(missing)})"
            )
        lengths = np.array([store.length(k) for k in labels.keys], dtype=np.int64)
        empty = [labels.keys[i] for i in np.flatnonzero(lengths <= 0)]
        if empty:
            raise InputError(f"{cfg.features}: {len(empty)} training utterances have no frames (first: {_first(empty)})")
        recipe = plain(dict(store.recipe))
        n_mels = int(recipe.get("n_mels", 80))
    finally:
        store.close()
    if len(labels.keys) < cfg.batch_size * world:
        raise UsageError(
            f"{cfg.train_labels}: {len(labels.keys)} training utterances cannot fill one batch of "
            f"{cfg.batch_size} x {world} process(es); lower --batch-size"
        )
    trials = None
    valid_store = None
    if cfg.has_validation:
        if cfg.valid_trials:
            trials = read_trials(cfg.valid_trials)
            trial_name = cfg.valid_trials
        else:
            trials = read_trial_pair(cfg.valid_clients, cfg.valid_impostors)
            trial_name = f"{cfg.valid_clients} / {cfg.valid_impostors}"
        if trials.labels.min() == trials.labels.max():
            raise InputError(f"{trial_name}: validation needs both same- and different-speaker trials")
        valid_store = cfg.valid_features or cfg.features
        vstore = _open_store(valid_store)
        try:
            check_recipe(valid_store, plain(dict(vstore.recipe)), recipe, f"the training store {cfg.features}")
            unique = trials.unique_keys()
            absent = [k for k in unique if k not in vstore]
            if absent:
                raise InputError(
                    f"{trial_name}: {len(absent)} of {len(unique)} trial keys are not in the feature store "
                    f"{valid_store} (first: {_first(absent)})"
                )
        finally:
            vstore.close()
    return TrainData(keys=labels.keys, labels=labels.labels, speakers=labels.names,
                     num_speakers=labels.num_classes, lengths=lengths, recipe=recipe, n_mels=n_mels,
                     trials=trials, valid_store=valid_store)


def load_run_checkpoint(path: str | Path) -> dict:
    """load_checkpoint, with any unreadable file (truncated, junk) reported as one InputError line."""
    from dasv_cli.io.checkpoint import load_checkpoint

    try:
        return load_checkpoint(path, map_location="cpu")
    except DasvError:
        raise
    except Exception as exc:  # e.g. struct.error from the safe unpickler on a truncated file
        raise InputError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc


def check_output(cfg: TrainConfig) -> Path:
    """OUT must not hold a run unless resuming, and must hold one when resuming."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a directory")
    last = out / LAST
    if cfg.resume and not last.exists():
        raise InputError(f"{last}: no checkpoint to resume from")
    if not cfg.resume and last.exists():
        raise UsageError(f"{out} already holds a training run ({LAST}); continue it with --resume or choose another -o")
    return out


def build_model(cfg: TrainConfig, num_speakers: int, n_mels: int = 80):
    """SpeakerNet for these options (a bad combination is a one-line UsageError)."""
    from dasv_cli.model import ModelConfig, SpeakerNet

    try:
        mcfg = ModelConfig.from_dict(model_config_dict(cfg, num_speakers, n_mels))
    except ValueError as exc:
        raise UsageError(f"model options: {exc}") from exc
    return SpeakerNet(mcfg)


def model_summary(model) -> str:
    from dasv_cli.model import count_parameters

    lines = [f"model: {model.cfg.front_end} K={model.cfg.kernel_size} -> {model.cfg.pooling}"
             f" ({model.cfg.heads} heads) -> {model.cfg.embedding_size}-d embedding, "
             f"{model.cfg.num_speakers} speakers, numerics={model.cfg.numerics}"]
    for name in ("front_end", "pooling", "fc1", "bn1", "fc2", "bn2", "pre", "am_softmax"):
        part = getattr(model, name, None)
        if part is not None:
            lines.append(f"  {name:<11} {count_parameters(part):>12,d} parameters")
    lines.append(f"  {'total':<11} {count_parameters(model):>12,d} parameters")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Distributed facts (filled by dasv_cli.train.distributed; defaults = one process)


@dataclass
class RunContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(cfg: TrainConfig) -> str:
    import torch

    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {cfg.device}: no CUDA device is available")
    return cfg.device


@dataclass
class TrainResult:
    step: int
    epoch: int
    best_eer: float | None
    reason: str  # "max_steps" | "early_stopping" | "max_epochs" | "interrupted"
    skipped: int
    out: Path
    exit_code: int = 0


def weights_digest(model) -> str:
    """SHA-256 of the state dict (parameters and buffers), to prove ranks hold identical weights."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class _TrainStep:
    """Builds the module that DDP wraps: embeddings (optionally compiled) and AM-Softmax logits."""

    @staticmethod
    def make(net, embed):
        import torch

        class TrainStep(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = net

            def forward(self, feats, labels, step: int):
                return self.net.logits(embed(feats), labels, step)

        return TrainStep()


def _bn_buffers(model) -> list:
    return [b for b in model.buffers()]


# --------------------------------------------------------------------------------------------------


class Trainer:
    """One process's share of a training run. `run()` returns a TrainResult (or raises DasvError)."""

    def __init__(self, cfg: TrainConfig, data: TrainData, ctx: RunContext | None = None) -> None:
        self.cfg = cfg
        self.data = data
        self.ctx = ctx or RunContext(device=pick_device(cfg))
        self.out = Path(cfg.out)
        self.step = 0
        self.epoch = 0
        self.epoch_batch = 0
        self.best_eer: float | None = None
        self.stopping = 0
        self.skipped = 0
        self.consecutive_bad = 0
        self.last_eer: float | None = None
        self._interrupts = 0
        self._fault = self._parse_fault(os.environ.get("DASV_TRAIN_FAULT", ""))

    # -- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _parse_fault(spec: str) -> tuple[str, int, int] | None:
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

    def log(self, message: str) -> None:
        if self.ctx.is_main:
            progress.log(message)

    def _all_reduce(self, values: list[float], op: str = "sum") -> list[float]:
        if not self.ctx.distributed:
            return values
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64 if self.ctx.device == "cpu" else torch.float32,
                         device=self.ctx.device)
        dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op])
        return t.tolist()

    def _broadcast(self, values: list[float]) -> list[float]:
        if not self.ctx.distributed:
            return values
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64 if self.ctx.device == "cpu" else torch.float32,
                         device=self.ctx.device)
        dist.broadcast(t, src=0)
        return t.tolist()

    def _barrier(self) -> None:
        if self.ctx.distributed:
            import torch.distributed as dist

            dist.barrier()

    # -- signals -------------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002
        self._interrupts += 1
        if self._interrupts == 1 and self.ctx.is_main:
            progress.warn("interrupted: finishing this update and writing last.pt (Ctrl-C twice more aborts)")
        if self._interrupts >= 3:
            raise KeyboardInterrupt

    def _install_signals(self) -> dict:
        old = {}
        if threading.current_thread() is not threading.main_thread():
            return old
        sigs = [signal.SIGINT] + ([] if self.ctx.distributed else [signal.SIGTERM])
        for s in sigs:
            old[s] = signal.signal(s, self._on_signal)
        return old

    @staticmethod
    def _restore_signals(old: dict) -> None:
        for s, h in old.items():
            signal.signal(s, h)

    # -- set-up --------------------------------------------------------------------------------
    def setup(self) -> None:
        import torch

        cfg, ctx = self.cfg, self.ctx
        torch.manual_seed(cfg.seed)
        if ctx.device.startswith("cuda"):
            torch.cuda.manual_seed_all(cfg.seed)
            # Fixed window shapes: let cuDNN pick the fastest convolution algorithms (GPU runs are
            # not bit-reproducible anyway; CPU runs are, and are unaffected).
            torch.backends.cudnn.benchmark = True
        self.model = build_model(cfg, self.data.num_speakers, self.data.n_mels).to(ctx.device)
        min_frames = self.model.min_frames
        shortest = min(cfg.window_frames, 200) if cfg.random_slicing else cfg.window_frames
        if shortest < min_frames:
            raise UsageError(
                f"--window-seconds {cfg.window_seconds}: {shortest} frames is shorter than the "
                f"{cfg.front_end} minimum of {min_frames} frames"
            )
        if cfg.channels_last and ctx.device.startswith("cuda"):
            self.model = self.model.to(memory_format=torch.channels_last)
        opt_cls = {"Adam": torch.optim.Adam, "SGD": torch.optim.SGD, "RMSprop": torch.optim.RMSprop}[cfg.optimizer]
        self.optimizer = opt_cls(self.model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        resumed = None
        if cfg.resume:
            resumed = self._load_resume()
        # Different head masks per rank; the same stream again on resume (restored below).
        torch.manual_seed(cfg.seed + 7919 * ctx.rank + 1)
        if ctx.device.startswith("cuda"):
            torch.cuda.manual_seed(cfg.seed + 7919 * ctx.rank + 1)
        if resumed is not None:
            self._restore_rng(resumed.get("rng"))
        embed = self.model
        if cfg.compile:
            embed = torch.compile(self.model)
        step_module = _TrainStep.make(self.model, embed)
        if ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [torch.device(ctx.device).index] if ctx.device.startswith("cuda") else None
            self.step_module = DDP(step_module, device_ids=ids)
        else:
            self.step_module = step_module
        self._build_loader()
        self.amp_dtype = torch.bfloat16 if cfg.precision == "bf16" else None

    def _build_loader(self) -> None:
        from dasv_cli.train.windows import WindowBatchSampler, WindowDataset, make_loader

        cfg, ctx = self.cfg, self.ctx
        self.dataset = WindowDataset(cfg.features, self.data.keys, self.data.labels, self.data.lengths, cfg.norm)
        self.sampler = WindowBatchSampler(self.data.lengths, cfg.batch_size, cfg.window_frames, cfg.seed,
                                          ctx.rank, ctx.world, cfg.random_slicing)
        self.loader = make_loader(self.dataset, self.sampler, cfg.workers, cfg.seed, ctx.rank,
                                  pin_memory=ctx.device.startswith("cuda"))

    def _load_resume(self) -> dict:
        from dasv_cli.io.checkpoint import state_dict_mismatch
        from dasv_cli.io.shards import check_recipe

        ckpt = load_run_checkpoint(self.out / LAST)
        saved_recipe = ((ckpt.get("config") or {}).get("features") or {}).get("recipe")
        check_recipe(self.cfg.features, self.data.recipe, saved_recipe if isinstance(saved_recipe, dict) else None,
                     f"{self.out / LAST} was trained on")
        try:
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise InputError(
                f"{self.out / LAST}: the checkpoint does not fit these model options "
                f"({state_dict_mismatch(exc)})"
            ) from exc
        if ckpt.get("optimizer"):
            try:
                self.optimizer.load_state_dict(ckpt["optimizer"])
            except (ValueError, KeyError) as exc:
                raise InputError(f"{self.out / LAST}: optimizer state does not fit --optimizer {self.cfg.optimizer}") from exc
        self.step = int(ckpt.get("step", 0))
        self.epoch = int(ckpt.get("epoch", 0))
        self.epoch_batch = int(ckpt.get("epoch_batch", 0))
        self.best_eer = ckpt.get("best_eer")
        self.last_eer = ckpt.get("last_eer")
        self.stopping = int(ckpt.get("stopping", 0))
        self.skipped = int(ckpt.get("skipped", 0))
        saved_world = int(ckpt.get("world_size", 1))
        if saved_world != self.ctx.world:
            progress.warn(f"resuming a {saved_world}-process run with {self.ctx.world}: the example stream "
                          f"differs from an uninterrupted run")
        self.log(f"resumed {self.out / LAST}: step {self.step}, epoch {self.epoch}, batch {self.epoch_batch}")
        return ckpt

    def _rng_state(self) -> dict:
        """Every rank's torch (and CUDA) generator state, gathered on all ranks."""
        import torch

        mine = {"torch": torch.get_rng_state()}
        if self.ctx.device.startswith("cuda"):
            mine["cuda"] = torch.cuda.get_rng_state(torch.device(self.ctx.device))
        if self.ctx.distributed:
            import torch.distributed as dist

            gathered: list = [None] * self.ctx.world
            dist.all_gather_object(gathered, mine)
        else:
            gathered = [mine]
        return {"torch": [g["torch"] for g in gathered],
                "cuda": [g["cuda"] for g in gathered] if "cuda" in mine else None}

    def _restore_rng(self, rng: dict | None) -> None:
        import torch

        if not rng or not rng.get("torch"):
            return
        states = rng["torch"]
        if self.ctx.rank < len(states):
            torch.set_rng_state(states[self.ctx.rank])
        cuda = rng.get("cuda")
        if cuda and self.ctx.device.startswith("cuda") and self.ctx.rank < len(cuda):
            torch.cuda.set_rng_state(cuda[self.ctx.rank], torch.device(self.ctx.device))

    # -- checkpoints ---------------------------------------------------------------------------
    def checkpoint(self) -> dict:
        """The checkpoint dict (call on every rank: it gathers the RNG states)."""
        rng = self._rng_state()
        return {
            "config": {
                "model": self.model.cfg.to_dict(),
                "train": self.cfg.to_dict(),
                "features": {"norm": self.cfg.norm, "recipe": self.data.recipe},
            },
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "speakers": self.data.speakers,
            "step": self.step,
            "epoch": self.epoch,
            "epoch_batch": self.epoch_batch,
            "best_eer": self.best_eer,
            "last_eer": self.last_eer,
            "stopping": self.stopping,
            "skipped": self.skipped,
            "world_size": self.ctx.world,
            "rng": rng,
        }

    def save(self, *names: str, extra: dict | None = None) -> None:
        from dasv_cli.io.checkpoint import save_checkpoint

        ckpt = self.checkpoint()
        if extra:
            ckpt.update(extra)
        if self.ctx.is_main:
            for name in names:
                save_checkpoint(self.out / name, ckpt)
        self._barrier()

    # -- logging -------------------------------------------------------------------------------
    def _open_logs(self) -> None:
        self.metrics_fh = None
        self.tb = None
        if not self.ctx.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / METRICS
        if self.cfg.resume and path.exists():
            kept = []
            for line in path.read_text().splitlines():
                try:
                    if int(json.loads(line).get("step", 0)) <= self.step:
                        kept.append(line)
                except (ValueError, AttributeError):
                    continue
            path.write_text("".join(x + "\n" for x in kept))
        self.metrics_fh = path.open("a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.out / "tb"), purge_step=self.step + 1 if self.cfg.resume else None)
        except ImportError:  # pragma: no cover - tensorboard is a dependency
            progress.warn("tensorboard is not installed: no OUT/tb scalars")

    def _metric(self, record: dict) -> None:
        if self.metrics_fh is not None:
            self.metrics_fh.write(json.dumps(record) + "\n")
            self.metrics_fh.flush()
        if self.tb is not None:
            step = record["step"]
            for name, value in record.items():
                if name in ("step", "epoch") or value is None:
                    continue
                self.tb.add_scalar(f"{'valid' if name in ('eer', 'min_dcf_p01', 'min_dcf_p05') else 'train'}/{name}",
                                   value, step)
            self.tb.flush()

    def _close_logs(self) -> None:
        if getattr(self, "metrics_fh", None) is not None:
            self.metrics_fh.close()
            self.metrics_fh = None
        if getattr(self, "tb", None) is not None:
            self.tb.close()
            self.tb = None

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
            return self.step_module(feats, labels, self.step)

    def _margin_free_correct(self, logits, labels):
        """Correct predictions of the margin-free logits (what the original tool's accuracy used),
        as a 0-d float tensor on the device (no sync)."""
        import torch

        am = self.model.am_softmax
        with torch.no_grad():
            plain_logits = logits.detach().float().clone()
            rows = torch.arange(labels.shape[0], device=labels.device)
            plain_logits[rows, labels] += am.scale * am.margin * am.margin_factor(self.step)
            return (plain_logits.argmax(dim=1) == labels).sum().float()

    # -- validation ----------------------------------------------------------------------------
    def validate(self) -> None:
        """Rank 0 scores the trials; all ranks then apply the same LR/early-stopping decision."""
        eer = dcf1 = dcf5 = float("nan")
        if self.ctx.is_main:
            from dasv_cli.eval.validation import evaluate_trials

            t0 = time.time()
            if self._valid_store is None:
                self._valid_store = _open_store(self.data.valid_store)
            self.model.eval()
            try:
                metrics = evaluate_trials(self.model, self._valid_store, self.data.trials, norm=self.cfg.norm,
                                          device=self.ctx.device)
            finally:
                self.model.train()
            eer, dcf1, dcf5 = float(metrics.eer), float(metrics.min_dcf_p01), float(metrics.min_dcf_p05)
            self._valid_seconds = time.time() - t0
        eer, dcf1, dcf5 = self._broadcast([eer, dcf1, dcf5])
        self._validated_step = self.step
        self.last_eer = eer
        improved = math.isfinite(eer) and (self.best_eer is None or eer < self.best_eer)
        if improved:
            self.best_eer = eer
            self.stopping = 0
        else:
            self.stopping += 1
        halve = (not improved) and self.cfg.lr_patience > 0 and self.stopping % self.cfg.lr_patience == 0
        if halve:
            for group in self.optimizer.param_groups:
                group["lr"] *= 0.5
        if self.ctx.is_main:
            lr = self.optimizer.param_groups[0]["lr"]
            self._metric({"step": self.step, "epoch": self.epoch, "eer": eer, "min_dcf_p01": dcf1,
                          "min_dcf_p05": dcf5, "best_eer": self.best_eer, "lr": lr})
            note = "new best" if improved else f"{self.stopping} validation(s) without gain"
            self.log(f"validation step {self.step}: EER {eer:.2f}%  minDCF(0.01) {dcf1:.3f}  "
                     f"minDCF(0.05) {dcf5:.3f}  ({note}; {self._valid_seconds:.1f} s)"
                     + (f"; learning rate halved to {lr:.3g}" if halve else ""))
        self.save(*((BEST, LAST) if improved else (LAST,)))

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        import torch

        cfg, ctx = self.cfg, self.ctx
        self.setup()
        self._valid_store = None
        self._valid_seconds = 0.0
        self._validated_step = -1
        self._open_logs()
        old_signals = self._install_signals()
        accum = cfg.grad_accumulation
        world = ctx.world
        eff = cfg.batch_size * world * accum
        self.log(f"effective batch: {cfg.batch_size} per process x {world} process(es) x {accum} accumulation = {eff}")
        self.log(f"training on {ctx.device}: {len(self.data.keys)} utterances, {self.data.num_speakers} speakers, "
                 f"{len(self.sampler.plan())} batches per epoch per process")
        params = [p for p in self.model.parameters() if p.requires_grad]
        buffers = _bn_buffers(self.model)
        reason = "max_epochs"
        started = time.time()
        first_step = self.step
        window = {"loss": 0.0, "correct": 0.0, "count": 0.0, "batches": 0.0, "t0": time.time(), "samples": 0}
        pending = 0  # good micro-batches accumulated since the last update
        in_group = 0  # micro-batches seen since the last update
        interrupted = False
        bar = None
        task = None
        try:
            bar = progress.make_progress(progress_text_column()) if ctx.is_main else None
            if bar is not None:
                bar.start()
                task = bar.add_task("train", total=cfg.max_steps or None, completed=self.step, info="")
            self.optimizer.zero_grad(set_to_none=True)
            done = cfg.max_steps and self.step >= cfg.max_steps
            if done:
                reason = "max_steps"
            while not done and self.epoch < cfg.max_epochs:
                self.sampler.set_epoch(self.epoch, skip=self.epoch_batch)
                for feats, labels in self.loader:
                    feats = feats.to(ctx.device, non_blocking=True)
                    labels = labels.to(ctx.device, non_blocking=True)
                    if self._fault and self._fault == ("nan", ctx.rank, self.step) and in_group == 0:
                        feats = torch.full_like(feats, float("nan"))
                    snapshot = [b.detach().clone() for b in buffers]
                    logits = self.compute_logits(feats, labels)
                    loss = torch.nn.functional.cross_entropy(logits.float(), labels)
                    # One host sync per batch, before backward is queued, so the next batch's work
                    # can be issued while the GPU runs this one's backward.
                    loss_value, correct = torch.stack(
                        [loss.detach(), self._margin_free_correct(logits, labels)]).tolist()
                    bad = self._all_reduce([0.0 if math.isfinite(loss_value) else 1.0], "max")[0] > 0
                    self.epoch_batch += 1
                    in_group += 1
                    if bad:
                        with torch.no_grad():
                            for b, s in zip(buffers, snapshot):
                                b.copy_(s)
                        del logits, loss
                        self._skip(f"non-finite loss at step {self.step} (epoch {self.epoch}, batch {self.epoch_batch})")
                    else:
                        self.consecutive_bad = 0
                        (loss / accum).backward()
                        pending += 1
                        window["loss"] += loss_value
                        window["correct"] += correct
                        window["count"] += labels.shape[0]
                        window["batches"] += 1
                        window["samples"] += labels.shape[0]
                    if in_group < accum:
                        continue
                    in_group = 0
                    updated = self._update(params, pending, accum)
                    pending = 0
                    if not updated:
                        continue
                    if self._fault and self._fault == ("crash", ctx.rank, self.step):
                        raise RuntimeError(f"injected fault (DASV_TRAIN_FAULT) on rank {ctx.rank} at step {self.step}")
                    if bar is not None:
                        bar.update(task, completed=self.step, info=self._info(window))
                    if self.step % cfg.print_every == 0:
                        self._report(window)
                    validated = False
                    if cfg.has_validation and self.step % cfg.validate_every == 0:
                        t_valid = time.time()
                        self.validate()
                        window["t0"] += time.time() - t_valid  # samples/s counts training time only
                        validated = True
                    if bar is not None and validated:
                        bar.update(task, info=self._info(window))
                    out_of_time = bool(cfg.max_minutes) and time.time() - started > cfg.max_minutes * 60
                    stop, timeout = self._all_reduce([1.0 if self._interrupts else 0.0, float(out_of_time)], "max")
                    if stop > 0:
                        interrupted = True
                        reason = "interrupted"
                        done = True
                        break
                    if timeout > 0:
                        reason = "max_minutes"
                        done = True
                        break
                    if cfg.max_steps and self.step >= cfg.max_steps:
                        reason = "max_steps"
                        done = True
                        break
                    if cfg.early_stopping >= 0 and self.stopping > cfg.early_stopping:
                        reason = "early_stopping"
                        done = True
                        break
                    if not validated and self.step % cfg.save_every == 0:
                        self.save(LAST)
                else:
                    self.epoch += 1
                    self.epoch_batch = 0
                    continue
            # A run that ends between validations is validated once more, so that its last EER
            # (and best.pt) describe the final weights.
            if (cfg.has_validation and reason in ("max_steps", "max_minutes", "max_epochs")
                    and self.step > first_step and self._validated_step != self.step):
                self.validate()
            # Finish: identical buffers everywhere (BatchNorm statistics are per rank between
            # DDP's broadcasts), a digest per rank as proof, and last.pt.
            digests = self._final_sync()
            self.save(LAST, extra={"rank_digests": digests} if digests else None)
            if ctx.is_main:
                best = f", best EER {self.best_eer:.2f}%" if self.best_eer is not None else ""
                self.log(f"stopped ({reason}) at step {self.step}, epoch {self.epoch}{best}; "
                         f"{self.skipped} non-finite batch(es) skipped; checkpoints in {self.out}")
        except DivergedError:
            self.save(LAST)  # the weights never saw the bad batches: keep what was learnt
            raise
        except RuntimeError as exc:
            if "DataLoader timed out" not in str(exc):
                raise
            from dasv_cli.train.windows import LOADER_TIMEOUT_S

            raise DasvError(
                f"the data loader workers sent no batch for {LOADER_TIMEOUT_S} s (is /dev/shm full? "
                f"rerun with --workers 0, or give the container more shared memory)"
                + (f"; {self.out / LAST} holds the last saved state (continue with --resume)"
                   if (self.out / LAST).exists() else "")
            ) from exc
        finally:
            if bar is not None:
                bar.stop()
            self._restore_signals(old_signals)
            self._close_logs()
            if self._valid_store is not None:
                self._valid_store.close()
            self._shutdown_loader()
            self.dataset.close()
        return TrainResult(step=self.step, epoch=self.epoch, best_eer=self.best_eer, reason=reason,
                           skipped=self.skipped, out=self.out,
                           exit_code=EXIT_INTERRUPTED if interrupted else 0)

    def _shutdown_loader(self) -> None:
        """Stop the (persistent) loader workers now rather than at interpreter exit."""
        it = getattr(getattr(self, "loader", None), "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
            self.loader._iterator = None

    def _skip(self, what: str) -> None:
        self.skipped += 1
        self.consecutive_bad += 1
        if self.ctx.is_main:
            progress.warn(f"{what}: batch skipped ({self.skipped} so far)")
            if self.tb is not None:  # metrics.jsonl carries the count in its loss lines
                self.tb.add_scalar("train/skipped", self.skipped, self.step)
        if self.consecutive_bad >= self.cfg.max_nonfinite:
            raise DivergedError(
                f"training diverged: {self.consecutive_bad} batches in a row gave a non-finite loss "
                f"(step {self.step}); {self.out / LAST} holds the last good state; try a lower "
                f"--learning-rate or --precision fp32"
            )

    def _update(self, params, pending: int, accum: int) -> bool:
        """Apply the accumulated gradients; False when nothing (finite) was accumulated."""
        import torch

        if pending == 0:
            self.optimizer.zero_grad(set_to_none=True)
            return False
        if pending < accum:  # some micro-batches were skipped: average over the good ones
            for p in params:
                if p.grad is not None:
                    p.grad.mul_(accum / pending)
        norm = torch.nn.utils.clip_grad_norm_(params, float("inf"))
        if not math.isfinite(float(norm)):
            self.optimizer.zero_grad(set_to_none=True)
            self._skip(f"non-finite gradient at step {self.step}")
            return False
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return True

    def _info(self, window: dict) -> str:
        if window["batches"] == 0:  # just reported: keep showing the last figures
            return getattr(self, "_last_info", "")
        n = window["batches"]
        elapsed = max(time.time() - window["t0"], 1e-9)
        sps = window["samples"] * self.ctx.world / elapsed
        eer = f"  EER {self.last_eer:.2f}%" if self.last_eer is not None else ""
        self._last_info = (f"loss {window['loss'] / n:.3f}  acc {100 * window['correct'] / max(window['count'], 1):.1f}%  "
                           f"{sps:.0f} samples/s{eer}")
        return self._last_info

    def _report(self, window: dict) -> None:
        loss, correct, count, batches, samples = self._all_reduce(
            [window["loss"], window["correct"], window["count"], window["batches"], float(window["samples"])])
        elapsed = max(time.time() - window["t0"], 1e-9)
        if self.ctx.is_main and batches > 0:
            lr = self.optimizer.param_groups[0]["lr"]
            record = {"step": self.step, "epoch": self.epoch, "loss": loss / batches,
                      "accuracy": 100.0 * correct / max(count, 1), "lr": lr,
                      "samples_per_s": samples / elapsed, "skipped": self.skipped}
            self._metric(record)
            self.log(f"step {self.step} epoch {self.epoch}: loss {record['loss']:.4f}  accuracy "
                     f"{record['accuracy']:.2f}%  lr {lr:.3g}  {record['samples_per_s']:.1f} samples/s")
        window.update(loss=0.0, correct=0.0, count=0.0, batches=0.0, t0=time.time(), samples=0)

    def _final_sync(self) -> list[str] | None:
        if not self.ctx.distributed:
            return None
        import torch.distributed as dist

        for b in self.model.buffers():
            dist.broadcast(b.data, src=0)
        digest = weights_digest(self.model)
        gathered: list = [None] * self.ctx.world
        dist.all_gather_object(gathered, digest)
        if self.ctx.is_main:
            same = len(set(gathered)) == 1
            self.log(f"{'all' if same else 'NOT all'} {self.ctx.world} ranks hold identical weights "
                     f"(sha256 {gathered[0][:12]}...)")
        return gathered


def progress_text_column():
    from rich.progress import TextColumn

    return TextColumn("{task.fields[info]}")


def train(cfg: TrainConfig, ctx: RunContext | None = None, data: TrainData | None = None,
          trainer_cls: type[Trainer] = Trainer) -> TrainResult:
    """Check the inputs, print the resolved config, and run the loop in this process."""
    ctx = ctx or RunContext(device=pick_device(cfg))
    if data is None:
        data = prepare_data(cfg, ctx.world)
    if ctx.is_main:
        check_output(cfg)
        progress.log(format_config(cfg))
    trainer = trainer_cls(cfg, data, ctx)
    return trainer.run()


__all__ = ["TrainConfig", "TrainData", "TrainResult", "Trainer", "RunContext", "DivergedError",
           "prepare_data", "check_output", "build_model", "model_summary", "train", "weights_digest",
           "format_config", "LAST", "BEST", "METRICS"]
