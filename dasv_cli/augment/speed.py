"""Speed perturbation (0.9 / 1.1, as WeSpeaker and Kaldi's speed-perturb): tempo and pitch together.

The samples are read as if recorded at `rate * factor` and resampled to `rate` (sox's `speed`
followed by `rate`), so the copy lasts 1/factor as long; the resampler is the one audio decoding
uses (soxr HQ, band-limited), so a slowed copy gains no aliasing.
"""

from __future__ import annotations

import numpy as np

from dasv_cli.io.audio import resample


def perturb_speed(wave: np.ndarray, factor: float, rate: int) -> np.ndarray:
    """`wave` played `factor` times as fast: len(wave) / factor samples at `rate`; float32 out."""
    if factor <= 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    source_rate = int(round(rate * factor))
    if source_rate == rate:
        return np.asarray(wave, dtype=np.float32)
    return resample(np.asarray(wave, dtype=np.float32), source_rate, rate)
