"""One audio file -> its log-mel features: the one computation behind `dasv features` and `dasv embed --audio`.

dsp and io.audio only (no processes, no store, no torch), so evaluation can featurise audio on the fly
with exactly the numbers a feature store would hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Sequence, Union

import numpy as np

from dasv_cli.dsp.logmel import LogMelConfig
from dasv_cli.errors import DasvError


@dataclass
class FileFeatures:
    """What the store keeps for one file."""

    feats: np.ndarray | None  # [frames, n_mels] in the requested dtype (None in a waveform store)
    mean: np.ndarray | None  # [n_mels] float32, over time, of the float32 features
    std: np.ndarray | None  # [n_mels] float32 (ddof=0)
    samples: int  # at the recipe's rate
    source_rate: int  # the file's own rate (resampled when it differs from the recipe's)
    audio: np.ndarray | None = None  # int16 [samples] PCM, for a store with waveforms (--keep-audio)

    @property
    def frames(self) -> int:
        return 0 if self.feats is None else int(self.feats.shape[0])


@dataclass
class Computed:
    """A listed file whose features were computed."""

    key: str
    features: FileFeatures
    kind: str = ""  # the augmentation of a copy (dasv_cli.augment.keys.KINDS); "" for the file itself


@dataclass
class Failed:
    """A listed file that gave no features, and why (a line of failed.tsv)."""

    key: str
    path: str
    reason: str


Outcome = Union[Computed, Failed]


def features_of(wave: np.ndarray, source_rate: int, cfg: LogMelConfig, dtype: str = "float32",
                content: str = "features") -> FileFeatures:
    """The features of a decoded waveform (float32 mono at the recipe's rate): a file's, or an
    augmented copy's made from it. ValueError for a waveform shorter than one window.

    `content` (io.store.layout.CONTENTS): with the PCM kept ("features+audio") the features are
    those of the 16-bit PCM stored beside them, so that the log-mel of a stored waveform window is
    the stored features' window (for 16-bit sources, all that LibriSpeech and VoxCeleb hold, the
    PCM is the file itself and the features do not change); "audio" keeps the PCM only (any length).
    """
    from dasv_cli.dsp.logmel import logmel, utterance_stats
    from dasv_cli.io.store.columns import pcm16

    n = len(wave)
    if content != "features":
        if n < 1:
            raise ValueError("empty: no samples")
        audio = pcm16(wave)
        if content == "audio":
            return FileFeatures(None, None, None, n, source_rate, audio)
        wave = audio.astype(np.float32) / np.float32(32768.0)
    if n < cfg.min_samples:
        raise ValueError(
            f"too short: {1000 * n / cfg.sample_rate:.1f} ms, less than one "
            f"{1000 * cfg.win_length / cfg.sample_rate:g} ms analysis window"
        )
    feats = logmel(wave, cfg)
    mean, std = utterance_stats(feats)
    if dtype != "float32":
        feats = feats.astype(dtype)
    return FileFeatures(feats, mean, std, n, source_rate, audio if content != "features" else None)


def compute_file(path: str, cfg: LogMelConfig, dtype: str = "float32", content: str = "features") -> FileFeatures:
    """The features of one file.

    Raises AudioError for unusable audio and ValueError for audio shorter than one window.
    """
    from dasv_cli.io.audio import read_audio

    audio = read_audio(path, cfg.sample_rate)
    return features_of(audio.wave, audio.source_rate, cfg, dtype, content)


def guarded(key: str, path: str, compute: Callable[[], FileFeatures], kind: str = "") -> Outcome:
    """compute() as an Outcome: Computed, or Failed with the reason for failed.tsv (one bad file, or
    one bad copy, never stops the others)."""
    from dasv_cli.io.audio import AudioError

    try:
        return Computed(key, compute(), kind)
    except AudioError as exc:
        return Failed(key, path, exc.reason)
    except DasvError as exc:  # an augmentation source met mid-run (AugmentError names the file)
        return Failed(key, path, exc.message)
    except ValueError as exc:
        return Failed(key, path, str(exc))
    except MemoryError:
        return Failed(key, path, "out of memory while computing features (file too long?)")
    except Exception as exc:  # one odd file must not stop a million-file run
        return Failed(key, path, f"unexpected error: {type(exc).__name__}: {exc}")


def compute_items(items: Sequence[tuple[str, str]], cfg: LogMelConfig, dtype: str,
                  content: str = "features") -> list[Outcome]:
    """An Outcome for each (key, path): one bad file never stops the others."""
    return [guarded(key, path, partial(compute_file, path, cfg, dtype, content)) for key, path in items]
