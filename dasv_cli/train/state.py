"""A run's state on disk and in memory: counters, RNG streams, the checkpoint dict, and resume.

`last.pt` holds everything an exact continuation needs: weights, optimizer, the counters below,
every rank's torch (and CUDA) generator state, and the configs. Resuming restores them in the same
order a fresh run creates them, so a run killed and resumed ends with the weights of one that never
stopped.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from dasv_cli import progress
from dasv_cli.errors import DasvError, InputError, UsageError
from dasv_cli.train.config import TrainConfig
from dasv_cli.train.inputs import TrainData
from dasv_cli.train.ranks import RunContext

LAST = "last.pt"
BEST = "best.pt"
RUN_LOCK = ".dasv-train.lock"  # held (flock) by the one process that owns a run for its whole life
if TYPE_CHECKING:  # pragma: no cover
    from dasv_cli.io.lock import DirectoryLock

RANK_SEED_STRIDE = 7919  # rank r's generator is seeded with seed + 7919 r + 1: different head masks per rank


@dataclass
class RunState:
    """The counters of a run (stored in every checkpoint)."""

    step: int = 0  # updates applied
    epoch: int = 0
    epoch_batch: int = 0  # batches of this epoch already used
    best_eer: float | None = None
    last_eer: float | None = None
    stopping: int = 0  # validations in a row without gain
    skipped: int = 0  # non-finite batches skipped
    lr_scale: float = 1.0  # 0.5 per plateau halving (the schedule multiplies it in: train/schedule.py)

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> "RunState":
        return cls(step=int(ckpt.get("step", 0)), epoch=int(ckpt.get("epoch", 0)),
                   epoch_batch=int(ckpt.get("epoch_batch", 0)), best_eer=ckpt.get("best_eer"),
                   last_eer=ckpt.get("last_eer"), stopping=int(ckpt.get("stopping", 0)),
                   skipped=int(ckpt.get("skipped", 0)), lr_scale=float(ckpt.get("lr_scale", 1.0)))


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


@contextmanager
def hold_output(cfg: TrainConfig) -> Iterator["DirectoryLock"]:
    """The run's exclusive lock on OUT (created), held for the `with` block: a second `dasv train -o
    OUT` is refused with one line naming the holder, before it reads or writes anything there. The
    kernel drops the lock when its holder dies, so a killed or requeued run resumes at once. Taken by
    the process that owns the run: the single process, the launcher of --procs/--gpus ranks, or rank 0
    under an external torchrun (train.distributed)."""
    from dasv_cli.io.lock import DirectoryLock
    from dasv_cli.io.paths import create_dir

    out = create_dir(cfg.out, "the run directory", " (choose another -o)")
    lock = DirectoryLock(out, RUN_LOCK, lambda who: f"{out}: another `dasv train` run {who} is writing to this "
                         f"directory; wait for it to finish or choose another -o", close_in_children=True)
    with lock:
        if not lock.supported:
            progress.warn(f"{out}: the file system does not support locks; make sure no other `dasv train` "
                          f"writes to this directory at the same time")
        yield lock


def load_run_checkpoint(path: str | Path) -> dict:
    """load_checkpoint, with any unreadable file (truncated, junk) reported as one InputError line."""
    from dasv_cli.io.checkpoint import load_checkpoint

    try:
        return load_checkpoint(path, map_location="cpu")
    except DasvError:
        raise
    except Exception as exc:  # e.g. struct.error from the safe unpickler on a truncated file
        raise InputError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc


# -- RNG -------------------------------------------------------------------------------------------


def seed_process(seed: int, ctx: RunContext) -> None:
    """The run's seed for everything built before training (the same weights on every rank)."""
    import torch

    torch.manual_seed(seed)
    if ctx.device.startswith("cuda"):
        torch.cuda.manual_seed_all(seed)
        # Fixed window shapes: let cuDNN pick the fastest convolution algorithms (GPU runs are
        # not bit-reproducible anyway; CPU runs are, and are unaffected).
        torch.backends.cudnn.benchmark = True


def seed_rank(seed: int, ctx: RunContext) -> None:
    """This rank's own stream for training (head masks, noise); restored from last.pt on resume."""
    import torch

    torch.manual_seed(seed + RANK_SEED_STRIDE * ctx.rank + 1)
    if ctx.device.startswith("cuda"):
        torch.cuda.manual_seed(seed + RANK_SEED_STRIDE * ctx.rank + 1)


def rng_state(ctx: RunContext) -> dict:
    """Every rank's torch (and CUDA) generator state, gathered on all ranks."""
    import torch

    mine = {"torch": torch.get_rng_state()}
    if ctx.device.startswith("cuda"):
        mine["cuda"] = torch.cuda.get_rng_state(torch.device(ctx.device))
    gathered = ctx.gather(mine)
    return {"torch": [g["torch"] for g in gathered],
            "cuda": [g["cuda"] for g in gathered] if "cuda" in mine else None}


def restore_rng(rng: dict | None, ctx: RunContext) -> None:
    """This rank's generators as `rng_state` stored them (nothing when the checkpoint has none)."""
    import torch

    if not rng or not rng.get("torch"):
        return
    states = rng["torch"]
    if ctx.rank < len(states):
        torch.set_rng_state(states[ctx.rank])
    cuda = rng.get("cuda")
    if cuda and ctx.device.startswith("cuda") and ctx.rank < len(cuda):
        torch.cuda.set_rng_state(cuda[ctx.rank], torch.device(ctx.device))


# -- the checkpoint --------------------------------------------------------------------------------


def checkpoint_dict(cfg: TrainConfig, data: TrainData, model, optimizer, state: RunState,
                    ctx: RunContext) -> dict:
    """The checkpoint dict (call on every rank: it gathers the RNG states)."""
    rng = rng_state(ctx)
    return {
        "config": {
            "model": model.cfg.to_dict(),
            "train": cfg.to_dict(),
            "features": {"norm": cfg.norm, "recipe": data.recipe},
        },
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "speakers": data.speakers,
        **asdict(state),
        "world_size": ctx.world,
        "rng": rng,
    }


def restore(path: Path, cfg: TrainConfig, data: TrainData, model, optimizer,
            ctx: RunContext) -> tuple[RunState, dict]:
    """Load `path` into `model` and `optimizer`; the counters and the checkpoint (for its RNG states).

    The checkpoint must come from the same features recipe and fit the network and the optimizer.
    """
    from dasv_cli.io.checkpoint import state_dict_mismatch
    from dasv_cli.io.store.layout import check_recipe

    ckpt = load_run_checkpoint(path)
    saved_recipe = ((ckpt.get("config") or {}).get("features") or {}).get("recipe")
    check_recipe(cfg.features, data.recipe, saved_recipe if isinstance(saved_recipe, dict) else None,
                 f"{path} was trained on")
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise InputError(f"{path}: the checkpoint does not fit these model options ({state_dict_mismatch(exc)})") from exc
    if ckpt.get("optimizer"):
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as exc:
            raise InputError(f"{path}: optimizer state does not fit --optimizer {cfg.optimizer}") from exc
    state = RunState.from_checkpoint(ckpt)
    groups = (ckpt.get("optimizer") or {}).get("param_groups") or []
    if "lr_scale" not in ckpt and groups:  # written before the schedule: its LR holds the halvings
        stored_lr = float(((ckpt.get("config") or {}).get("train") or {}).get("learning_rate", cfg.learning_rate))
        state.lr_scale = float(groups[0]["lr"]) / stored_lr
    saved_world = int(ckpt.get("world_size", 1))
    if saved_world != ctx.world:
        progress.warn(f"resuming a {saved_world}-process run with {ctx.world}: the example stream "
                      f"differs from an uninterrupted run")
    if ctx.is_main:
        progress.log(f"resumed {path}: step {state.step}, epoch {state.epoch}, batch {state.epoch_batch}")
    return state, ckpt


CLASSIFIER = "am_softmax.weight"  # one row per training speaker: re-drawn when the speakers differ


def init_weights(path: str | Path, cfg: TrainConfig, data: TrainData, model, ctx: RunContext) -> None:
    """--init-from: the weights of `path` (torch.load weights_only) into the new run's `model`.

    Every tensor must have the network's shape, except the speaker classifier when the number of
    speakers differs: that one keeps the fresh draw of the new network (a new run on other speakers).
    Nothing else comes over: no optimizer, step, RNG or plateau counters (the run starts at step 0).
    """
    from dasv_cli.io.store.layout import check_recipe

    ckpt = load_run_checkpoint(path)
    weights = ckpt.get("model")
    if not isinstance(weights, dict):
        raise InputError(f"{path}: holds no model weights")
    saved_recipe = ((ckpt.get("config") or {}).get("features") or {}).get("recipe")
    check_recipe(cfg.features, data.recipe, saved_recipe if isinstance(saved_recipe, dict) else None,
                 f"{path} was trained on")
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    wrong = [k for k in own if k in weights and tuple(weights[k].shape) != tuple(own[k].shape) and k != CLASSIFIER]
    if missing or unexpected or wrong:
        what = (f"{wrong[0]} is {list(weights[wrong[0]].shape)} there but {list(own[wrong[0]].shape)} here" if wrong
                else f"{len(missing)} tensor(s) missing, {len(unexpected)} unexpected (first: {(missing or unexpected)[0]})")
        raise InputError(f"{path}: the weights do not fit this network ({what}); the network options "
                         f"(--kernel-size, --heads, ...) must be the checkpoint's")
    fresh = CLASSIFIER in weights and tuple(weights[CLASSIFIER].shape) != tuple(own[CLASSIFIER].shape)
    if fresh:
        weights = {k: v for k, v in weights.items() if k != CLASSIFIER}
    model.load_state_dict(weights, strict=not fresh)
    if ctx.is_main:
        speakers = f"; classifier re-drawn for {data.num_speakers} speakers" if fresh else ""
        progress.log(f"weights from {path} (step {int(ckpt.get('step', 0))} there){speakers}; a new run from step 0")


__all__ = ["LAST", "BEST", "RunState", "check_output", "load_run_checkpoint", "seed_process", "seed_rank",
           "rng_state", "restore_rng", "checkpoint_dict", "restore", "init_weights"]
