"""The network of a run: built from the options, checked against the window, summarised; and the
networks inside checkpoints (dasv's or the original tool's) for `dasv model` and `dasv convert`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dasv_cli.errors import DasvError, InputError, UsageError
from dasv_cli.model import ModelConfig
from dasv_cli.train.config import TrainConfig, model_config_dict
from dasv_cli.train.windows import MIN_SLICE_FRAMES


def build_model(cfg: TrainConfig, num_speakers: int, n_mels: int = 80):
    """SpeakerNet for these options (a bad combination is a one-line UsageError)."""
    from dasv_cli.model import SpeakerNet

    try:
        mcfg = ModelConfig.from_dict(model_config_dict(cfg, num_speakers, n_mels))
    except ValueError as exc:
        raise UsageError(f"model options: {exc}") from exc
    return SpeakerNet(mcfg)


def check_window(cfg: TrainConfig, min_frames: int) -> None:
    """The shortest training window must reach the front-end's minimum input."""
    shortest = min(cfg.window_frames, MIN_SLICE_FRAMES) if cfg.random_slicing else cfg.window_frames
    if shortest < min_frames:
        raise UsageError(
            f"--window-seconds {cfg.window_seconds}: {shortest} frames is shorter than the "
            f"minimum of {min_frames} frames of {cfg.front_end} with {cfg.pooling} pooling"
        )


def make_optimizer(cfg: TrainConfig, model):
    """--optimizer (Adam, SGD or RMSprop: torch.optim's names) over every parameter."""
    import torch

    opt_cls = getattr(torch.optim, cfg.optimizer)
    return opt_cls(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)


def train_step(net, compile_: bool):
    """The module that DDP wraps: embeddings (optionally compiled) then AM-Softmax logits."""
    import torch

    embed = torch.compile(net) if compile_ else net

    class TrainStep(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, feats, labels, step: int):
            return self.net.logits(embed(feats), labels, step)

    return TrainStep()


def model_summary(model) -> str:
    from dasv_cli.model import count_parameters

    cfg = model.cfg
    heads = f" ({cfg.heads} heads)" if cfg.pooling in ("DoubleMHA", "MHA") else ""
    lines = [f"model: {cfg.front_end} K={cfg.kernel_size} -> {cfg.pooling}{heads} -> {cfg.head} head, "
             f"{cfg.embedding_size}-d embedding, {cfg.num_speakers} speakers, numerics={cfg.numerics}"]
    for name in ("front_end", "pooling", "pool_bn", "fc1", "bn1", "fc2", "bn2", "pre", "am_softmax"):
        part = getattr(model, name, None)
        if part is not None:
            lines.append(f"  {name:<11} {count_parameters(part):>12,d} parameters")
    lines.append(f"  {'total':<11} {count_parameters(model):>12,d} parameters")
    return "\n".join(lines)


# -- networks inside checkpoints -------------------------------------------------------------------


def _original_model_config(checkpoint: dict[str, Any], path: Path) -> ModelConfig:
    """The network of a converted original checkpoint, as dasv can build it (else one InputError)."""
    try:
        return ModelConfig.from_dict(checkpoint["config"]["model"])
    except ValueError as exc:
        raise InputError(f"{path}: unsupported network settings: {exc}") from None


def checkpoint_network(path: Path) -> dict[str, Any]:
    """The network config (a plain dict) in a dasv checkpoint or an original `.chkpt`."""
    from dasv_cli.io.checkpoint import load_checkpoint
    from dasv_cli.io.original import convert_original, is_original_checkpoint

    if is_original_checkpoint(path):
        checkpoint = convert_original(path)
        _original_model_config(checkpoint, path)
    else:
        checkpoint = load_checkpoint(path)
    return dict(checkpoint["config"]["model"])


def network_summary(overrides: dict[str, Any], source: Path | None = None, frames: int = 350) -> dict[str, Any]:
    """Parameter counts and sizes of the paper's network (or `source`'s) with `overrides` applied.
    Another front-end without a kernel size takes that front-end's published size."""
    from dasv_cli.model import describe

    base = {} if source is None else checkpoint_network(source)
    given = {k: v for k, v in overrides.items() if v is not None}
    if given.get("front_end", base.get("front_end")) != base.get("front_end"):
        base.pop("kernel_size", None)
    base.update(given)
    try:
        return describe(ModelConfig.from_dict(base), frames=frames)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def convert_checkpoint(original: Path, output: Path, force: bool = False) -> dict[str, Any]:
    """Write an original `.chkpt` as a dasv checkpoint at `output`; returns a summary of it.

    The converted weights are loaded into the network they describe (strictly) before anything is
    written, so a written checkpoint always loads.
    """
    from dasv_cli.io.checkpoint import save_checkpoint
    from dasv_cli.io.original import convert_original
    from dasv_cli.model import SpeakerNet, count_parameters

    if output.exists() and not force:
        raise DasvError(f"{output}: already exists; pass --force to overwrite it")
    if output.resolve() == original.resolve():
        raise DasvError(f"{output}: is the input file; choose another output path")
    checkpoint = convert_original(original)
    cfg = _original_model_config(checkpoint, original)
    net = SpeakerNet(cfg)
    net.load_state_dict(checkpoint["model"], strict=True)  # the mapping is complete and fits
    save_checkpoint(output, checkpoint)
    return {
        "input": str(original),
        "output": str(output),
        "model": cfg.to_dict(),
        "parameters": count_parameters(net),
        "norm": checkpoint["config"]["features"]["norm"],
        "step": checkpoint["step"],
        "epoch": checkpoint["epoch"],
    }


__all__ = ["build_model", "check_window", "make_optimizer", "train_step", "model_summary",
           "checkpoint_network", "network_summary", "convert_checkpoint"]
