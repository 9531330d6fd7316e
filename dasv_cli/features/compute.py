"""One audio file -> its log-mel features: the one computation behind `dasv features` and `dasv embed --audio`.

dsp and io.audio only (no processes, no store, no torch), so evaluation can featurise audio on the fly
with exactly the numbers a feature store would hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

from dasv_cli.dsp.logmel import LogMelConfig


@dataclass
class FileFeatures:
    """What the store keeps for one file."""

    feats: np.ndarray  # [frames, n_mels] in the requested dtype
    mean: np.ndarray  # [n_mels] float32, over time, of the float32 features
    std: np.ndarray  # [n_mels] float32 (ddof=0)
    samples: int  # at the recipe's rate
    source_rate: int  # the file's own rate (resampled when it differs from the recipe's)


@dataclass
class Computed:
    """A listed file whose features were computed."""

    key: str
    features: FileFeatures


@dataclass
class Failed:
    """A listed file that gave no features, and why (a line of failed.tsv)."""

    key: str
    path: str
    reason: str


Outcome = Union[Computed, Failed]


def compute_file(path: str, cfg: LogMelConfig, dtype: str = "float32") -> FileFeatures:
    """The features of one file.

    Raises AudioError for unusable audio and ValueError for audio shorter than one window.
    """
    from dasv_cli.dsp.logmel import logmel, utterance_stats
    from dasv_cli.io.audio import read_audio

    audio = read_audio(path, cfg.sample_rate)
    n = len(audio.wave)
    if n < cfg.min_samples:
        raise ValueError(
            f"too short: {1000 * n / cfg.sample_rate:.1f} ms, less than one "
            f"{1000 * cfg.win_length / cfg.sample_rate:g} ms analysis window"
        )
    feats = logmel(audio.wave, cfg)
    mean, std = utterance_stats(feats)
    if dtype != "float32":
        feats = feats.astype(dtype)
    return FileFeatures(feats, mean, std, n, audio.source_rate)


def compute_items(items: Sequence[tuple[str, str]], cfg: LogMelConfig, dtype: str) -> list[Outcome]:
    """An Outcome for each (key, path): one bad file never stops the others."""
    from dasv_cli.io.audio import AudioError

    out: list[Outcome] = []
    for key, path in items:
        try:
            out.append(Computed(key, compute_file(path, cfg, dtype)))
        except AudioError as exc:
            out.append(Failed(key, path, exc.reason))
        except ValueError as exc:
            out.append(Failed(key, path, str(exc)))
        except MemoryError:
            out.append(Failed(key, path, "out of memory while computing features (file too long?)"))
        except Exception as exc:  # one odd file must not stop a million-file run
            out.append(Failed(key, path, f"unexpected error: {type(exc).__name__}: {exc}"))
    return out
