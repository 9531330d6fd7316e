"""What every front-end tells about itself: its output size and its time arithmetic.

A front-end maps log-mel frames [B, T, n_mels] to frame vectors [B, T', D]. Besides `output_size`
(D) and `min_frames` (the shortest input), each exposes, for callers that split long inputs into
chunks (bounded-memory embedding of hour-long audio):
- `time_stride`: input frames per output frame (T' = output_frames(T), about T / time_stride);
- `receptive_field`: input frames that one output frame depends on, so a chunk carrying
  (receptive_field - time_stride) / 2 frames of context on each side reproduces its inner outputs;
- `time_global`: True where an operation sees the whole input (ECAPA's squeeze-excitation averages
  over every frame), so chunked outputs differ from whole-input ones however much context is given.
The numbers come from model/geometry.py (torch-free), which ModelConfig reads too.
"""

from __future__ import annotations

import torch
from torch import nn

from dasv_cli.model.geometry import Geometry


class FrontEnd(nn.Module):
    """Base of the front-ends: `geometry` set by the subclass; the properties read it."""

    geometry: Geometry

    @property
    def output_size(self) -> int:
        """D, the size of each output frame vector."""
        return self.geometry.frame_size

    @property
    def min_frames(self) -> int:
        """Shortest input in frames (one output frame)."""
        return self.geometry.min_frames

    @property
    def time_stride(self) -> int:
        """Input frames per output frame."""
        return self.geometry.time_stride

    @property
    def receptive_field(self) -> int:
        """Input frames that one output frame depends on (not counting a time-global operation)."""
        return self.geometry.receptive_field

    @property
    def time_global(self) -> bool:
        """True when an operation averages over the whole input (chunking is then inexact)."""
        return self.geometry.time_global

    def output_frames(self, frames: int) -> int:
        """Frame vectors produced for `frames` input frames."""
        return self.geometry.output_frames(frames)


def flatten_frames(x: torch.Tensor) -> torch.Tensor:
    """A 2-D front-end's map [B, C, T', F'] as frame vectors [B, T', C * F'], channel-major per frame
    (index = channel * F' + band): the original VGG code's layout, and WeSpeaker's for its ResNets."""
    b, c, t, f = x.shape
    return x.permute(0, 2, 1, 3).reshape(b, t, c * f)


__all__ = ["FrontEnd", "flatten_frames"]
