"""Additive mixing at a signal-to-noise ratio, and the level guard every augmented copy goes through.

SNR is 10 log10(P_speech / P_noise) with P the mean square over the whole utterance (what Kaldi's
wav-reverberate and WeSpeaker use), the noise taken over exactly the samples it is added to, so the
ratio measured on the mixed waveform (mixed - speech against speech) is the one asked for.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def power(wave: np.ndarray) -> float:
    """Mean square, in float64."""
    w = np.asarray(wave, dtype=np.float64)
    return float(np.dot(w, w) / w.size) if w.size else 0.0


def fit_length(source: np.ndarray, length: int, offset: float) -> np.ndarray:
    """`length` samples of `source` from `offset` (a fraction of the free length): a crop of a longer
    source, or a shorter one repeated (wrapping around from its offset), as Kaldi and WeSpeaker do."""
    n = len(source)
    if n == 0:
        raise ValueError("empty source")
    if n >= length:
        start = min(int(offset * (n - length + 1)), n - length)
        return source[start:start + length]
    start = min(int(offset * n), n - 1)
    reps = -(-(length + start) // n)
    return np.tile(source, reps)[start:start + length]


def scaled_to_snr(speech_power: float, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`noise` (float64) scaled so that speech_power / power = 10^(snr_db / 10); silence stays silence."""
    noise = np.asarray(noise, dtype=np.float64)
    p = power(noise)
    if p <= 0.0 or speech_power <= 0.0:
        return np.zeros_like(noise)
    return noise * np.sqrt(speech_power / (p * 10.0 ** (snr_db / 10.0)))


def add_at_snrs(speech: np.ndarray, noises: Sequence[np.ndarray], snrs: Sequence[float]) -> np.ndarray:
    """speech + each noise (already `len(speech)` long) at its SNR against the speech; float64 out."""
    s = np.asarray(speech, dtype=np.float64)
    ps = power(s)
    out = s.copy()
    for noise, snr in zip(noises, snrs):
        if len(noise) != len(s):
            raise ValueError(f"noise of {len(noise)} samples for speech of {len(s)}")
        out += scaled_to_snr(ps, noise, snr)
    return out


def limit(wave: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1]: a copy that would clip is scaled down as a whole (ratios kept, no clipping);
    the log-mel recipe scales by 32768, so waves stay at the clean speech's full-scale convention."""
    w = np.asarray(wave, dtype=np.float64)
    peak = float(np.max(np.abs(w))) if w.size else 0.0
    if peak > 1.0:
        w = w / peak
    return np.clip(w, -1.0, 1.0).astype(np.float32)
