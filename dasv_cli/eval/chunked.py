"""The whole-utterance embedding of a recording of any length, computed a chunk at a time.

The front-ends are convolutional with a finite receptive field: an output frame j depends only on
the input frames within `receptive_field` of [j S, (j + 1) S), S the front-end's `time_stride`. So
the front-end runs on chunks whose cores start at multiples of S (its pooling grid is then the whole
recording's), each widened by a margin of at least the receptive field on both sides (zero padding
and ceil-mode windows at a chunk's edge only touch outputs inside that margin, which are cropped;
at the recording's own edges the chunk edge *is* the recording's). The frame-level outputs of the
cores, concatenated, are the whole recording's, and the pooling and head run once on them: the
embedding equals the one-pass embedding (to float rounding), while the activations held are one
chunk's. The log-mel is likewise computed block by block from the waveform, its whole-recording
statistics accumulated for CMN / CMVN, and each block is released once the chunks have passed it.

What stays proportional to the length: the waveform while it is featurised (4 bytes a sample), the
log-mel blocks not yet passed (320 bytes a frame), and the frame-level sequence the pooling needs
(VGG4L K=1024: 20 KB per 160 ms, 460 MB an hour; the demo VGG3L K=64: 115 MB an hour). Measured peak
memory of `dasv compare` (10 s chunks, 2 shared cores): VGG4L K=1024, 10 min 691 MB (87 s), 20 min
720 MB (174 s), was 7.6 GB at 10 min in one pass; demo VGG3L K=64, 60 min 609 MB (85 s).

A front-end with a layer that looks at the whole utterance (`time_global = True`, e.g. squeeze-and-
excitation) or one that does not declare its stride and field is run in one pass, with a warning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Protocol

import numpy as np

from dasv_cli.dsp.logmel import LogMelConfig, logmel, logmel_frames, normalise

# Chunk length: VGG4L K=1024 holds ~120 KB of activations per input frame in its first block on a
# CPU, so 10 s (1,000 frames plus two 80-frame margins, 16 % more front-end work) stays near 140 MB,
# which leaves room for an hour's frame-level sequence (460 MB) under 1 GB.
DEFAULT_CHUNK_SECONDS = 10.0
DEFAULT_CHUNK_FRAMES = 1000  # the same at the paper's 10 ms hop, for features already computed


def chunk_frames(seconds: float, cfg: LogMelConfig) -> int:
    """Input frames per chunk for `seconds` of audio (ValueError unless positive)."""
    if not seconds > 0 or not math.isfinite(seconds):
        raise ValueError(f"--chunk-seconds must be a positive number of seconds, got {seconds}")
    return max(1, int(round(seconds * cfg.sample_rate / cfg.hop_length)))


class Features:
    """A recording's raw log-mel in blocks, with its whole-recording statistics, read normalised."""

    def __init__(self, blocks: list[np.ndarray], block: int, norm: str) -> None:
        self.blocks: list[Optional[np.ndarray]] = list(blocks)
        self.block = block
        self.norm = norm
        self.total = sum(b.shape[0] for b in blocks)
        self.mean, self.std = _stats(blocks, self.total)

    @classmethod
    def of_wave(cls, wave: np.ndarray, cfg: LogMelConfig, norm: str, block: int) -> "Features":
        """dsp.logmel's features of `wave`, computed `block` frames at a time (ValueError when the
        wave is shorter than one analysis window)."""
        total = cfg.num_frames(int(wave.shape[0]))
        if wave.shape[0] < cfg.n_fft:  # one frame (or none: logmel says why)
            return cls([logmel(wave, cfg)], block, norm)
        return cls([logmel_frames(wave, s, min(s + block, total), cfg) for s in range(0, total, block)], block, norm)

    @classmethod
    def of_array(cls, feats: np.ndarray, norm: str, block: int,
                 stats: tuple[np.ndarray, np.ndarray] | None = None) -> "Features":
        """Features already computed (a feature store's), with their stored statistics when given."""
        feats = np.asarray(feats, dtype=np.float32)
        got = cls([feats[s:s + block] for s in range(0, feats.shape[0], block)], block, norm)
        if stats is not None:
            got.mean, got.std = stats
        return got

    def read(self, start: int, stop: int) -> np.ndarray:
        """Normalised frames [start, stop), float32."""
        first, last = start // self.block, (stop - 1) // self.block
        parts = []
        for i in range(first, last + 1):
            b = self.blocks[i]
            if b is None:
                raise RuntimeError(f"log-mel block {i} was released before frame {start} was read")
            lo = max(start - i * self.block, 0)
            parts.append(b[lo:min(stop - i * self.block, b.shape[0])])
        raw = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return np.asarray(normalise(raw, self.mean, self.std, self.norm), dtype=np.float32)

    def release(self, before: int) -> None:
        """Drop the blocks that lie wholly before frame `before` (they will not be read again)."""
        for i in range(min(before // self.block, len(self.blocks))):
            self.blocks[i] = None


def _stats(blocks: list[np.ndarray], total: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) over time as dsp.logmel.utterance_stats, accumulated a block at a time in float64."""
    mean = sum(b.sum(axis=0, dtype=np.float64) for b in blocks) / total
    var = sum(np.square(b - mean).sum(axis=0) for b in blocks) / total
    return mean.astype(np.float32), np.sqrt(var).astype(np.float32)


class Parts(Protocol):
    """What the chunked pass needs of an extractor (TorchParts here; deploy.runtime.OnnxExtractor)."""

    min_frames: int

    def layout(self) -> tuple[int, int, bool] | None: ...  # (time_stride, receptive_field, time_global)

    def frames(self, feats: np.ndarray) -> np.ndarray: ...  # normalised [1, T, F] -> [1, T', D]

    def head(self, frames: np.ndarray) -> np.ndarray: ...  # [1, T', D] -> [1, E]


class TorchParts:
    """A SpeakerNet (eval mode for the call, as eval.embed runs it) split into front-end and head."""

    def __init__(self, model: Any, device: str = "cpu") -> None:
        self.model = getattr(model, "module", model)
        self.device = device
        self.min_frames = int(self.model.min_frames)

    def layout(self) -> tuple[int, int, bool] | None:
        return front_end_layout(self.model.front_end)

    def _run(self, fn: Any, x: np.ndarray) -> np.ndarray:
        import torch

        was_training = bool(self.model.training)
        self.model.eval()
        try:
            with torch.inference_mode():
                return fn(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)).float().cpu().numpy()
        finally:
            if was_training:
                self.model.train()

    def frames(self, feats: np.ndarray) -> np.ndarray:
        return self._run(self.model.front_end, feats)

    def head(self, frames: np.ndarray) -> np.ndarray:
        return self._run(lambda x: self.model.embed_pooled(self.model.pooling(x)), frames)


def parts_of(model: Any, device: str, norm: str) -> tuple[Parts, str]:
    """(the extractor as Parts, the normalisation its front-end input needs): a SpeakerNet through
    TorchParts with `norm`; an exported model is Parts itself and names its own normalisation (the
    callers of its whole graph feed raw log-mel, `norm` "none", since that graph normalises)."""
    if hasattr(model, "frames") and hasattr(model, "head"):
        return model, model.norm
    return TorchParts(model, device), norm


def front_end_layout(front_end: Any) -> tuple[int, int, bool] | None:
    """(time_stride, receptive_field, time_global) a front-end declares, None when it does not."""
    stride, field = getattr(front_end, "time_stride", None), getattr(front_end, "receptive_field", None)
    if not isinstance(stride, int) or not isinstance(field, int) or stride < 1 or field < 1:
        return None
    return stride, field, bool(getattr(front_end, "time_global", False))


@dataclass(frozen=True)
class Chunk:
    """Input frames [lo, hi) go through the front-end; the outputs of the core [start, stop) are kept."""

    lo: int
    start: int
    stop: int
    hi: int


def plan_chunks(total: int, stride: int, field: int, chunk: int) -> list[Chunk]:
    """Cores of `chunk` frames (rounded down to a multiple of `stride`, at least one stride) at
    multiples of `stride`, each widened by the receptive field rounded up to a multiple of `stride`."""
    size = max(stride, chunk // stride * stride)
    margin = -(-field // stride) * stride
    return [Chunk(max(0, s - margin), s, min(s + size, total), min(total, s + size + margin))
            for s in range(0, total, size)]


def frame_sequence(parts: Parts, feats: Features, chunk: int) -> np.ndarray:
    """The front-end's frame-level outputs [1, ceil(T / stride), D] of all T frames, chunk by chunk."""
    stride, field, _ = parts.layout() or (1, 0, True)
    out: np.ndarray | None = None
    filled = 0
    expected = -(-feats.total // stride)
    chunks = plan_chunks(feats.total, stride, field, chunk)
    for i, c in enumerate(chunks):
        got = parts.frames(feats.read(c.lo, c.hi)[None])
        first = (c.start - c.lo) // stride
        count = -(-c.stop // stride) - c.start // stride
        if got.shape[1] < first + count:
            raise RuntimeError(f"the front-end gave {got.shape[1]} frames for {c.hi - c.lo} input frames; "
                               f"chunking needs ceil(frames / {stride})")
        if out is None:
            out = np.empty((1, expected, got.shape[2]), dtype=np.float32)
        out[0, filled:filled + count] = got[0, first:first + count]
        filled += count
        if i + 1 < len(chunks):
            feats.release(chunks[i + 1].lo)
    assert out is not None and filled == expected, (filled, expected)
    return out


def embed_features(parts: Parts, feats: Features, chunk: int, name: str = "the recording") -> np.ndarray:
    """float32 [E]: the whole-utterance embedding of `feats`, the front-end run `chunk` frames at a time
    (one pass when the recording fits one chunk, or the front-end cannot be chunked; a recording shorter
    than the network's minimum is repeated to reach it, as eval.embed does)."""
    total = feats.total
    if total < parts.min_frames:
        x = feats.read(0, total)
        x = np.concatenate([x] * -(-parts.min_frames // total))[:parts.min_frames]
        return parts.head(parts.frames(x[None]))[0]
    layout = parts.layout()
    if total > chunk and (layout is None or layout[2]):
        from dasv_cli.progress import warn

        why = "has a layer over the whole utterance" if layout is not None else "declares no receptive field"
        warn(f"{name}: the front-end {why}, so its {total} frames go through it in one pass "
             f"(memory grows with the length)")
        return parts.head(parts.frames(feats.read(0, total)[None]))[0]
    return parts.head(frame_sequence(parts, feats, chunk))[0]
