"""Front-end geometry, torch-free: sizes and time arithmetic of every front-end, from its name alone.

What a caller needs to know about a front-end without building it: the frame vector size D, the
time downsampling factor (input frames per output frame), the receptive field in input frames of one
output frame, the shortest input, and whether the network has a time-global operation (a squeeze-
excitation that averages over the whole input), which makes any split of the input into chunks
inexact however much context the chunks carry. ModelConfig and the torch front-ends (which expose
the same numbers as attributes) read them from here, so there is one source.

| front-end  | D                       | time stride | receptive field | time-global |
|------------|-------------------------|-------------|-----------------|-------------|
| VGG3L      | K x ceil(n_mels / 8)    | 8           | 36 frames       | no          |
| VGG4L      | K x ceil(n_mels / 16)   | 16          | 76 frames       | no          |
| ResNet34   | K x ceil(n_mels / 8)    | 8           | 225 frames      | no          |
| ECAPA      | 3 x min(K, 512)         | 1           | 131 frames      | yes (SE)    |
"""

from __future__ import annotations

import math
from dataclasses import dataclass

VGG_BLOCKS = {"VGG3L": 3, "VGG4L": 4}  # conv blocks of each VGG front-end
RESNET_STAGES = {"ResNet34": (3, 4, 6, 3)}  # basic blocks per stage
ECAPA_DILATIONS = (2, 3, 4)  # one SE-Res2Net block per dilation
ECAPA_SCALE = 8  # Res2Net splits per block
ECAPA_MFA_CHANNELS = 1536  # multi-layer aggregation width at the published sizes (C = 512 and 1024)
FRONT_END_NAMES = (*VGG_BLOCKS, *RESNET_STAGES, "ECAPA")
# K, "channels of the last conv block", when not given: the published sizes
DEFAULT_KERNEL_SIZE = {"VGG3L": 1024, "VGG4L": 1024, "ResNet34": 256, "ECAPA": 512}


def halvings(frames: int, times: int) -> int:
    """Frames (or bands) left after `times` ceil-mode halvings (a 2x max-pool with ceil mode, or a
    stride-2 3x3 convolution with padding 1)."""
    for _ in range(times):
        frames = math.ceil(frames / 2)
    return frames


@dataclass(frozen=True)
class Geometry:
    """One front-end's sizes and time arithmetic (see the module table)."""

    name: str
    kernel_size: int
    n_mels: int
    frame_size: int  # D, the size of each output frame vector
    time_stride: int  # input frames per output frame
    receptive_field: int  # input frames that one output frame depends on (before any time-global op)
    time_global: bool  # an operation (SE) sees the whole input: chunked embedding is inexact
    min_frames: int  # the shortest input: one output frame

    def output_frames(self, frames: int) -> int:
        """Output frame vectors for `frames` input frames."""
        return halvings(frames, int(math.log2(self.time_stride)))


def _check_name(name: str) -> None:
    if name not in FRONT_END_NAMES:
        raise ValueError(f"unknown front-end {name!r}; choose one of {', '.join(FRONT_END_NAMES)}")


def check_kernel_size(name: str, kernel_size: int) -> None:
    """ValueError unless K suits the front-end: a multiple of 2^(blocks-1) (VGG: channels K/2^(b-1)
    ... K), of 8 (ResNet34: base channels K/8; ECAPA: 8 Res2Net splits of C)."""
    _check_name(name)
    divisor = 2 ** (VGG_BLOCKS[name] - 1) if name in VGG_BLOCKS else 8
    if kernel_size < divisor or kernel_size % divisor:
        raise ValueError(f"kernel_size {kernel_size} must be a multiple of {divisor} for {name}")


def _vgg(blocks: int) -> tuple[int, int]:
    """(stride, receptive field): per block two 3x3 convolutions then a 2x2 pool."""
    field, jump = 1, 1
    for _ in range(blocks):
        field += 2 * 2 * jump + jump
        jump *= 2
    return jump, field


def _resnet(stages: tuple[int, ...]) -> tuple[int, int]:
    """(stride, receptive field): a 3x3 stem, then per stage basic blocks of two 3x3 convolutions,
    the first of stages 2.. with stride 2 (the longest path runs through every convolution)."""
    field, jump = 3, 1
    for s, blocks in enumerate(stages):
        for conv in range(2 * blocks):
            field += 2 * jump
            if s > 0 and conv == 0:
                jump *= 2
    return jump, field


def ecapa_mfa_channels(kernel_size: int) -> int:
    """Width of ECAPA's multi-layer aggregation: 1536 at C = 512 and 1024 (as the paper and
    WeSpeaker); 3 C for the small networks of tests and experiments."""
    return 3 * min(kernel_size, ECAPA_MFA_CHANNELS // 3)


def vgg_geometry(blocks: int, kernel_size: int, n_mels: int = 80) -> Geometry:
    """The geometry of a VGG front-end of any number of blocks."""
    stride, field = _vgg(blocks)
    d = kernel_size * halvings(n_mels, blocks)
    return Geometry(f"VGG{blocks}L", kernel_size, n_mels, d, stride, field, False, stride)


def geometry(name: str, kernel_size: int, n_mels: int = 80) -> Geometry:
    """The geometry of front-end `name` with K = `kernel_size` on `n_mels` bands."""
    check_kernel_size(name, kernel_size)
    if name in VGG_BLOCKS:
        return vgg_geometry(VGG_BLOCKS[name], kernel_size, n_mels)
    if name in RESNET_STAGES:
        stride, field = _resnet(RESNET_STAGES[name])
        d = kernel_size * halvings(n_mels, int(math.log2(stride)))
        return Geometry(name, kernel_size, n_mels, d, stride, field, False, stride)
    # ECAPA: a k=5 convolution, then per block a Res2Net whose last split passes through
    # scale - 1 dilated k=3 convolutions in sequence; the 1x1 convolutions add nothing.
    field = 5 + sum((ECAPA_SCALE - 1) * 2 * d for d in ECAPA_DILATIONS)
    return Geometry(name, kernel_size, n_mels, ecapa_mfa_channels(kernel_size), 1, field, True, 1)


__all__ = ["Geometry", "geometry", "vgg_geometry", "check_kernel_size", "halvings", "ecapa_mfa_channels", "FRONT_END_NAMES",
           "DEFAULT_KERNEL_SIZE", "VGG_BLOCKS", "RESNET_STAGES", "ECAPA_DILATIONS", "ECAPA_SCALE"]
