"""Reverberation: convolution with a room impulse response, aligned on its direct path, level kept.

As Kaldi's wav-reverberate (shift-output, normalize-output): the output starts at the RIR's direct
path (its largest sample), so the reverberant copy stays frame-aligned with the clean utterance and
keeps its length; it is rescaled to the clean utterance's power, so the recipe's level is kept
whatever the RIR's gain (WeSpeaker's unit-energy RIR serves the same end).
"""

from __future__ import annotations

import numpy as np

from dasv_cli.augment.mix import power


def direct_path(rir: np.ndarray) -> int:
    """Index of the direct sound: the RIR's largest magnitude (Kaldi takes the peak too)."""
    return int(np.argmax(np.abs(rir)))


def reverberate(wave: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """`wave` convolved with `rir`, the samples from the direct path on, `len(wave)` long, at the
    power of `wave`; float64 out (the caller applies `mix.limit`)."""
    from scipy.signal import fftconvolve  # here: scipy.signal's import is ~1.7 s of `dasv features` start-up

    x = np.asarray(wave, dtype=np.float64)
    h = np.asarray(rir, dtype=np.float64)
    if x.size == 0:
        return x.copy()
    d = direct_path(h)
    y = fftconvolve(x, h, mode="full")[d:d + x.size]
    p_in, p_out = power(x), power(y)
    if p_out <= 0.0:
        return np.zeros_like(x)
    return y * np.sqrt(p_in / p_out)
