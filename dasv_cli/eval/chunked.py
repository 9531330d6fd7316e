"""The whole-utterance embedding of a recording of any length, computed a chunk at a time.

The front-ends are convolutional with a finite receptive field: an output frame j depends only on
the input frames within `receptive_field` of [j S, (j + 1) S), S the front-end's `time_stride`. So
the front-end runs on chunks whose cores start at multiples of S (its pooling grid is then the whole
recording's), each widened by a margin of at least the receptive field on both sides (zero padding
and ceil-mode windows at a chunk's edge only touch outputs inside that margin, which are cropped;
at the recording's own edges the chunk edge *is* the recording's). The frame-level outputs of the
cores, in order, are the whole recording's; the pooling takes them as they come (model.pooling_stream:
running sums, and a running-max softmax for the attentions) and the head runs once on its result, so
the embedding equals the one-pass embedding (to float rounding) while what is held is one chunk's.
The log-mel comes from eval.chunk_features: computed from the file a span at a time (io.audio_stream
reads WAV and FLAC at the model's rate by seeking), its CMN / CMVN statistics in a first pass.

Still proportional to the length: ASTP pooling (its scores need the utterance's mean and std first)
and an export whose graph cannot be cut at its pooling (deploy.split) get the whole frame-level
sequence (VGG4L K=1024: 20 KB per 160 ms, 460 MB an hour); files that are resampled or decoded by
FFmpeg (m4a, mp3, ...) and --vad hold the waveform (4 bytes a sample, 230 MB an hour at 16 kHz).

Measured peak memory of `dasv compare` against a 10 s file (10 s chunks, 2 shared cores, nice):
VGG4L K=1024 (32 heads, 400-d), 10 min 566 MB (101 s), 60 min 583 MB (8 min 45 s); before the
pooling and the decoding streamed: 691 MB at 10 min, 720 MB at 20 min, and 7.6 GB at 10 min in one
pass. Demo VGG3L K=64 (8 heads, 64-d), 10 min 314 MB (7 s), 60 min 316 MB (62 s), was 609 MB at
60 min; its ONNX export, 10 min 417 MB, 60 min 417 MB (25 s), was 466 MB and 753 MB.

A front-end with a layer that looks at the whole utterance (`time_global = True`, e.g. squeeze-and-
excitation) or one that does not declare its stride and field is run in one pass, with a warning.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any, Iterator, Protocol

import numpy as np

from dasv_cli.dsp.logmel import LogMelConfig
from dasv_cli.eval.chunk_features import Features

# Chunk length: VGG4L K=1024 holds ~120 KB of activations per input frame in its first block on a
# CPU, so 10 s (1,000 frames plus two 80-frame margins, 16 % more front-end work) stays near 140 MB,
# and the pooling streams, so a recording of any length stays near that.
DEFAULT_CHUNK_SECONDS = 10.0
DEFAULT_CHUNK_FRAMES = 1000  # the same at the paper's 10 ms hop, for features already computed


def chunk_frames(seconds: float, cfg: LogMelConfig) -> int:
    """Input frames per chunk for `seconds` of audio (ValueError unless positive)."""
    if not seconds > 0 or not math.isfinite(seconds):
        raise ValueError(f"--chunk-seconds must be a positive number of seconds, got {seconds}")
    return max(1, int(round(seconds * cfg.sample_rate / cfg.hop_length)))


class Pooler(Protocol):
    """A pooling's running state (model.pooling_stream) with the head after it."""

    def update(self, frames: np.ndarray) -> None: ...  # the next frame vectors [1, t, D]

    def embedding(self) -> np.ndarray: ...  # [1, E] of every frame vector given


class Parts(Protocol):
    """What the chunked pass needs of an extractor (TorchParts here; deploy.runtime.OnnxExtractor)."""

    min_frames: int

    def layout(self) -> tuple[int, int, bool] | None: ...  # (time_stride, receptive_field, time_global)

    def frames(self, feats: np.ndarray) -> np.ndarray: ...  # normalised [1, T, F] -> [1, T', D]

    def head(self, frames: np.ndarray) -> np.ndarray: ...  # [1, T', D] -> [1, E]

    def pooler(self) -> Pooler | None: ...  # a fresh streaming pooling, None when it has none


class TorchParts:
    """A SpeakerNet (eval mode for the call, as eval.embed runs it) split into front-end and head."""

    def __init__(self, model: Any, device: str = "cpu") -> None:
        self.model = getattr(model, "module", model)
        self.device = device
        self.min_frames = int(self.model.min_frames)

    def layout(self) -> tuple[int, int, bool] | None:
        return front_end_layout(self.model.front_end)

    def run(self, fn: Any, x: np.ndarray | None) -> Any:
        """fn(x as a tensor on the device, or None) in eval and inference mode; a tensor result comes
        back as a float32 array."""
        import torch

        was_training = bool(self.model.training)
        self.model.eval()
        try:
            with torch.inference_mode():
                got = fn(None if x is None else torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
                         .to(self.device))
                return got.float().cpu().numpy() if isinstance(got, torch.Tensor) else got
        finally:
            if was_training:
                self.model.train()

    def frames(self, feats: np.ndarray) -> np.ndarray:
        return self.run(self.model.front_end, feats)

    def head(self, frames: np.ndarray) -> np.ndarray:
        return self.run(lambda x: self.model.embed_pooled(self.model.pooling(x)), frames)

    def pooler(self) -> Pooler | None:
        from dasv_cli.model.pooling_stream import stream_of

        stream = stream_of(self.model.pooling)
        return None if stream is None else TorchPooler(self, stream)


class TorchPooler:
    """TorchParts' pooling a chunk at a time (model.pooling_stream), then its head."""

    def __init__(self, parts: TorchParts, stream: Any) -> None:
        self.parts = parts
        self.stream = stream

    def update(self, frames: np.ndarray) -> None:
        self.parts.run(self.stream.update, frames)

    def embedding(self) -> np.ndarray:
        return self.parts.run(lambda _: self.parts.model.embed_pooled(self.stream.result()), None)


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


def fit_min_frames(feats: np.ndarray, min_frames: int) -> np.ndarray:
    """Repeat a too-short utterance in time until it has `min_frames` frames (eval.embed's batches and
    the chunked pass alike)."""
    t = feats.shape[0]
    if t >= min_frames:
        return feats
    return np.concatenate([feats] * -(-min_frames // t), axis=0)[:min_frames]


def plan_chunks(total: int, stride: int, field: int, chunk: int) -> list[Chunk]:
    """Cores of `chunk` frames (rounded down to a multiple of `stride`, at least one stride) at
    multiples of `stride`, each widened by the receptive field rounded up to a multiple of `stride`."""
    size = max(stride, chunk // stride * stride)
    margin = -(-field // stride) * stride
    return [Chunk(max(0, s - margin), s, min(s + size, total), min(total, s + size + margin))
            for s in range(0, total, size)]


def frame_blocks(parts: Parts, feats: Features, chunk: int) -> Iterator[np.ndarray]:
    """The front-end's frame-level outputs of all T frames, [1, ceil(T / stride), D] in all, one
    chunk's [1, t, D] at a time (the log-mel passed is released as it goes)."""
    stride, field, _ = parts.layout() or (1, 0, True)
    chunks = plan_chunks(feats.total, stride, field, chunk)
    for i, c in enumerate(chunks):
        got = parts.frames(feats.read(c.lo, c.hi)[None])
        first = (c.start - c.lo) // stride
        count = -(-c.stop // stride) - c.start // stride
        if got.shape[1] < first + count:
            raise RuntimeError(f"the front-end gave {got.shape[1]} frames for {c.hi - c.lo} input frames; "
                               f"chunking needs ceil(frames / {stride})")
        if i + 1 < len(chunks):
            feats.release(chunks[i + 1].lo)
        yield got[:, first:first + count]


def frame_sequence(parts: Parts, feats: Features, chunk: int) -> np.ndarray:
    """The front-end's frame-level outputs [1, ceil(T / stride), D] of all T frames, chunk by chunk."""
    stride = (parts.layout() or (1,))[0]
    expected = -(-feats.total // stride)
    out: np.ndarray | None = None
    filled = 0
    for got in frame_blocks(parts, feats, chunk):
        if out is None:
            out = np.empty((1, expected, got.shape[2]), dtype=np.float32)
        out[0, filled:filled + got.shape[1]] = got[0]
        filled += got.shape[1]
    assert out is not None and filled == expected, (filled, expected)
    return out


# The models already warned that they run long recordings in one pass (weak: a model's warning goes with it).
_SAID_ONE_PASS: "weakref.WeakSet[Any]" = weakref.WeakSet()


def embed_features(parts: Parts, feats: Features, chunk: int, name: str = "the recording") -> np.ndarray:
    """float32 [E]: the whole-utterance embedding of `feats`, the front-end run `chunk` frames at a time
    and its outputs pooled as they come (model.pooling_stream; a pooling without a stream, or an
    exported head, gets the whole frame-level sequence), in one pass when the recording fits one chunk
    or the front-end cannot be chunked; a recording shorter than the network's minimum is repeated to
    reach it, as eval.embed does."""
    total = feats.total
    if total < parts.min_frames:
        return parts.head(parts.frames(fit_min_frames(feats.read(0, total), parts.min_frames)[None]))[0]
    layout = parts.layout()
    if total > chunk and (layout is None or layout[2]):
        from dasv_cli.progress import warn

        owner = getattr(parts, "model", parts)
        if owner not in _SAID_ONE_PASS:  # once per model: an ECAPA corpus of 10-20 s files said it per file
            try:
                _SAID_ONE_PASS.add(owner)
            except TypeError:  # an extractor without weak references says it every time
                pass
            why = "has a layer over the whole utterance" if layout is not None else "declares no receptive field"
            warn(f"{name}: the front-end {why}, so its {total} frames, and any recording over {chunk}, go "
                 f"through it in one pass (memory grows with the length; said once)")
        return parts.head(parts.frames(feats.read(0, total)[None]))[0]
    pooler = parts.pooler()
    if pooler is None:
        return parts.head(frame_sequence(parts, feats, chunk))[0]
    for got in frame_blocks(parts, feats, chunk):
        pooler.update(got)
    return pooler.embedding()[0]
