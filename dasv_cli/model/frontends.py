"""VGG front-ends (VGG3L, VGG4L): log-mel frames [B, T, n_mels] -> frame vectors [B, T', K x ceil(n_mels / 2^blocks)].

Each block is two 3x3 convolutions (padding 1) with ReLU, then a 2x2 max-pool with ceil mode, so both
time and frequency are halved (rounded up) per block. The channels grow to K in the last block
(VGG4L: K/8, K/4, K/2, K; VGG3L: K/4, K/2, K). The output flattens channels and frequency per frame
channel-major (index = channel * F' + band), which is the layout the original research code used and
which its pooling weights expect.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dasv_cli.model.config import front_end_blocks, output_frames

class VGGFrontEnd(nn.Module):
    """`blocks` VGG blocks over a one-channel (time x frequency) image of log-mel features.

    Submodules are called conv11, conv12, conv21, ... (block, position) so that the state dict reads
    like the architecture and maps one-to-one onto the original tool's `front_end.convXY` names.
    """

    def __init__(self, blocks: int = 4, kernel_size: int = 1024, n_mels: int = 80) -> None:
        super().__init__()
        if blocks < 1:
            raise ValueError(f"a VGG front-end needs at least one block, got {blocks}")
        divisor = 2 ** (blocks - 1)
        if kernel_size < divisor or kernel_size % divisor:
            raise ValueError(
                f"kernel size K={kernel_size} must be a positive multiple of {divisor} for {blocks} blocks "
                f"(channels K/{divisor} ... K)"
            )
        self.blocks = blocks
        self.kernel_size = kernel_size
        self.n_mels = n_mels
        channels = [1] + [kernel_size // 2 ** (blocks - 1 - i) for i in range(blocks)]
        for b in range(blocks):
            c_in, c_out = channels[b], channels[b + 1]
            setattr(self, f"conv{b + 1}1", nn.Conv2d(c_in, c_out, 3, stride=1, padding=1))
            setattr(self, f"conv{b + 1}2", nn.Conv2d(c_out, c_out, 3, stride=1, padding=1))
        self.out_bands = output_frames(n_mels, blocks)
        self.output_size = kernel_size * self.out_bands
        self.min_frames = 2**blocks
        # For chunked inference (eval/chunked.py): input frames per output frame, and the span of input
        # frames one output frame sees (3x3 convs and 2x2 pools: 76 for VGG4L, 36 for VGG3L). No layer
        # looks at the whole utterance, so the front-end can run on overlapping chunks.
        self.time_stride = 2**blocks
        self.receptive_field = receptive_field([(3, 1), (3, 1), (2, 2)] * blocks)
        self.time_global = False
        self._conv_names = tuple((f"conv{b + 1}1", f"conv{b + 1}2") for b in range(blocks))

    def output_frames(self, frames: int) -> int:
        """Frame vectors produced for `frames` input frames."""
        return output_frames(frames, self.blocks)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """[B, T, n_mels] -> [B, ceil(T / 2^blocks), K * ceil(n_mels / 2^blocks)]."""
        x = feats.unsqueeze(1)  # [B, 1, T, F]
        if self.conv12.weight.is_contiguous(memory_format=torch.channels_last):
            # The model was moved to channels_last: keep the activations in that layout too.
            x = x.contiguous(memory_format=torch.channels_last)
        for first, second in self._conv_names:
            x = F.relu(getattr(self, first)(x))
            x = F.relu(getattr(self, second)(x))
            x = F.max_pool2d(x, 2, stride=2, ceil_mode=True)
        b, c, t, f = x.shape
        # channel-major flattening per frame: [B, C, T', F'] -> [B, T', C * F']
        return x.permute(0, 2, 1, 3).reshape(b, t, c * f)


def receptive_field(layers: list[tuple[int, int]]) -> int:
    """Input frames seen by one output frame of a stack of (kernel, stride) layers along time."""
    field, jump = 1, 1
    for kernel, stride in layers:
        field += (kernel - 1) * jump
        jump *= stride
    return field


def build_front_end(name: str, kernel_size: int = 1024, n_mels: int = 80) -> VGGFrontEnd:
    """VGG3L or VGG4L with `kernel_size` output channels."""
    return VGGFrontEnd(front_end_blocks(name), kernel_size, n_mels)
