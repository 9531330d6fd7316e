"""`--online-augment`: training batches built from waveform windows, augmented, featurised on the device.

The loader reads the same windows as the feature path (train.windows: the same plan, rows and
starts), but as 16-bit PCM: frames [s, s + F) of the stored features are the log-mel of samples
[160 s, 160 s + 160 (F - 1) + 512) (the STFT's frames are 512 samples every 160, no centring), so
a window is read with the 352 samples its last frame reaches past 160 F. In the training process,
on its device: augment.online draws and applies each row's augmentation (keyed by seed, rank,
update, micro-batch), dsp.logmel_batch gives the paper's log-mel, frames of an utterance shorter
than the window are tiled as the feature path tiles them, then the configured normalisation:
a row left clean with its utterance's stored statistics (exactly the feature path's example), an
augmented row with its own window's (the stored ones describe the clean utterance, not the
distorted window).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dasv_cli.augment.online import SourceStores, augment, parse_kinds, plan_batch
from dasv_cli.dsp.logmel import LogMelConfig, normalise
from dasv_cli.dsp.logmel_torch import logmel_batch
from dasv_cli.errors import DasvError, InputError
from dasv_cli.io.store.layout import check_recipe


def window_samples(frames: int, recipe: dict[str, Any]) -> int:
    """Samples whose log-mel is `frames` frames: hop x (frames - 1) + n_fft."""
    return int(recipe.get("hop_length", 160)) * (int(frames) - 1) + int(recipe.get("n_fft", 512))


def _waveform_store(path: str, flag: str, recipe: dict[str, Any]) -> Any:
    """A waveform store for `flag`, or one InputError line (missing, empty, corrupt, no waveforms)."""
    from dasv_cli.io.store.reader import FeatureStore

    if not Path(path).is_dir():
        raise InputError(f"{path}: no such waveform store ({flag}; make one with `dasv features LIST --audio-only -o DIR`)")
    try:
        store = FeatureStore(path)
    except DasvError as exc:
        raise InputError(f"{flag} {exc.message}") from None
    if len(store) == 0:
        raise InputError(f"{path}: the waveform store is empty ({flag})")
    if not store.has_audio:
        raise InputError(f"{path}: holds features but no waveforms ({flag}); make it with `dasv features LIST "
                         f"--audio-only -o DIR`")
    rate = {"sample_rate": recipe.get("sample_rate")}
    check_recipe(path, {"sample_rate": store.recipe.get("sample_rate")}, rate, f"the training store ({flag})")
    return store


def open_sources(cfg: Any, recipe: dict[str, Any]) -> SourceStores:
    """The noise/music/RIR pools that cfg.online_augment needs, checked before any update."""
    kinds = parse_kinds(cfg.online_augment)
    noise = _waveform_store(cfg.noise_store, "--noise-store", recipe) if cfg.noise_store else None
    rirs = _waveform_store(cfg.rir_store, "--rir-store", recipe) if cfg.rir_store else None
    return SourceStores(kinds, noise, rirs)


@dataclass
class WaveInfo:
    """What a waveform batch brings besides its samples: frames of each row that hold the utterance
    (fewer than the window when it is shorter) and its stored statistics (for the rows left clean)."""

    frames: np.ndarray  # int64 [B]
    mean: np.ndarray  # float32 [B, n_mels]
    std: np.ndarray | None  # float32 [B, n_mels] with cmvn


class OnlineFeatures:
    """Waveform windows [B, samples] on the device -> normalised log-mel [B, frames, n_mels] there."""

    def __init__(self, cfg: Any, sources: SourceStores, recipe: dict[str, Any], rank: int) -> None:
        self.kinds = parse_kinds(cfg.online_augment)
        self.prob, self.seed, self.rank, self.norm = cfg.augment_prob, cfg.seed, rank, cfg.norm
        self.sources = sources
        self.sizes = sources.sizes()
        self.logmel = LogMelConfig.from_dict(dict(recipe))

    def __call__(self, waves: Any, info: WaveInfo, step: int, micro: int) -> Any:
        import torch

        device, b, n = waves.device, waves.shape[0], waves.shape[1]
        plan = plan_batch(self.kinds, self.prob, b, self.sizes, self.seed, self.rank, step, micro)
        frames = torch.as_tensor(info.frames, device=device)
        cfg = self.logmel
        valid = torch.clamp(cfg.hop_length * (frames - 1) + cfg.n_fft, max=n)
        noises = torch.from_numpy(self.sources.noises(plan, n)).to(device) if self.sources.noise_store else None
        rirs = torch.from_numpy(self.sources.impulse_responses(plan)) if self.sources.rir_store else None
        scaled = augment(waves, plan, None if noises is None else noises.float() / 32768.0, rirs, valid)
        feats = logmel_batch(scaled, cfg)
        total = feats.shape[1]
        short = np.flatnonzero(info.frames < total)
        if short.size:  # frames past the utterance: its own frames repeated, as train.windows tiles
            t = torch.arange(total, device=device)
            for i in short.tolist():
                feats[i] = feats[i, t % int(info.frames[i])]
        if self.norm == "none":
            return feats
        clean = torch.as_tensor(plan.kind < 0, device=device)[:, None]
        mean = torch.where(clean, torch.from_numpy(info.mean).to(device), feats.mean(dim=1))
        std = None
        if self.norm == "cmvn":
            std = torch.where(clean, torch.from_numpy(info.std).to(device), feats.std(dim=1, unbiased=False))
        return normalise(feats, mean, std, self.norm, inplace=True)


__all__ = ["OnlineFeatures", "WaveInfo", "open_sources", "window_samples"]
