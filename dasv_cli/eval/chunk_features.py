"""A recording's log-mel for eval.chunked, read a span of frames at a time, normalised with the whole
recording's statistics.

- `Features.of_reader` (audio): the frames are computed from the waveform when asked for, from only
  the samples they need (dsp.logmel.logmel_span), so neither the waveform (when io.audio_stream
  streams the file) nor the log-mel is ever held whole. Two passes: the first accumulates the CMN /
  CMVN statistics block by block (count, mean and squared deviations per band in float64, merged),
  the second computes each chunk's frames again as the front-end reads them (with its margins: ~16 %
  of the log-mel work twice at 10 s chunks, small beside the network's).
- `Features.of_array` (a feature store's utterance, already in memory): blocks of it, released once
  the chunks have passed them.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import numpy as np

from dasv_cli.dsp.logmel import LogMelConfig, logmel, logmel_span, normalise
from dasv_cli.io.audio_stream import ArrayReader, WaveReader


class Features:
    """Raw log-mel frames [start, stop) from `raw`, with the recording's statistics, read normalised."""

    def __init__(self, raw: Callable[[int, int], np.ndarray], total: int, norm: str,
                 stats: tuple[np.ndarray, np.ndarray], release: Callable[[int], None] | None = None) -> None:
        self.raw = raw
        self.total = total
        self.norm = norm
        self.mean, self.std = stats
        self._release = release

    @classmethod
    def of_reader(cls, wave: WaveReader, cfg: LogMelConfig, norm: str, block: int) -> "Features":
        """dsp.logmel's features of a waveform, computed when read (`block` frames at a time for the
        statistics); ValueError when it is shorter than one analysis window."""
        total = cfg.num_frames(wave.samples)
        if wave.samples < cfg.n_fft:  # one frame (or none: logmel says why)
            return cls.of_array(logmel(wave.read(0, wave.samples), cfg), norm, block)

        def raw(start: int, stop: int) -> np.ndarray:
            first = start * cfg.hop_length
            x = wave.read(max(first - 1, 0), (stop - 1) * cfg.hop_length + cfg.n_fft)
            return logmel_span(x[1:], x[0], cfg) if first else logmel_span(x, None, cfg)

        return cls(raw, total, norm, _stats(raw(s, min(s + block, total)) for s in range(0, total, block)))

    @classmethod
    def of_wave(cls, wave: np.ndarray, cfg: LogMelConfig, norm: str, block: int) -> "Features":
        """of_reader of a waveform in memory."""
        return cls.of_reader(ArrayReader(wave), cfg, norm, block)

    @classmethod
    def of_array(cls, feats: np.ndarray, norm: str, block: int,
                 stats: tuple[np.ndarray, np.ndarray] | None = None) -> "Features":
        """Features already computed (a feature store's), with their stored statistics when given."""
        feats = np.asarray(feats, dtype=np.float32)
        held = _Held([feats[s:s + block] for s in range(0, feats.shape[0], block)], block)
        return cls(held.read, feats.shape[0], norm, stats if stats is not None else _stats(held.blocks), held.release)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Normalised frames [start, stop), float32."""
        return np.asarray(normalise(self.raw(start, stop), self.mean, self.std, self.norm), dtype=np.float32)

    def release(self, before: int) -> None:
        """Let go of what lies wholly before frame `before` (it will not be read again)."""
        if self._release is not None:
            self._release(before)


class _Held:
    """Log-mel blocks in memory, dropped once passed."""

    def __init__(self, blocks: list[np.ndarray], block: int) -> None:
        self.blocks: list[Optional[np.ndarray]] = list(blocks)
        self.block = block

    def read(self, start: int, stop: int) -> np.ndarray:
        first, last = start // self.block, (stop - 1) // self.block
        parts = []
        for i in range(first, last + 1):
            b = self.blocks[i]
            if b is None:
                raise RuntimeError(f"log-mel block {i} was released before frame {start} was read")
            lo = max(start - i * self.block, 0)
            parts.append(b[lo:min(stop - i * self.block, b.shape[0])])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def release(self, before: int) -> None:
        for i in range(min(before // self.block, len(self.blocks))):
            self.blocks[i] = None


def _stats(blocks: Iterable[Optional[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) over time as dsp.logmel.utterance_stats, merged a block at a time in float64
    (Chan et al.'s pairwise update of count, mean and squared deviations)."""
    count, mean, m2 = 0, None, None
    for b in blocks:
        assert b is not None
        n = b.shape[0]
        bm = b.sum(axis=0, dtype=np.float64) / n
        bm2 = np.square(b - bm).sum(axis=0)
        if mean is None or m2 is None:
            count, mean, m2 = n, bm, bm2
            continue
        delta = bm - mean
        mean = mean + delta * (n / (count + n))
        m2 = m2 + bm2 + np.square(delta) * (count * n / (count + n))
        count += n
    assert mean is not None and m2 is not None, "no frames"
    return mean.astype(np.float32), np.sqrt(m2 / count).astype(np.float32)
