"""Thin ResNet front-ends (ResNet34): log-mel frames [B, T, n_mels] -> frame vectors [B, T', K x ceil(n_mels / 8)].

The speaker-verification ResNet34 of WeSpeaker and voxceleb_trainer (after He et al. 2016, thin as
in Chung et al. 2020): a 3x3 stem convolution to K/8 channels, then four stages of basic blocks
([3, 4, 6, 3] for ResNet34) with K/8, K/4, K/2, K channels; the first block of stages 2-4 has stride
2 in time and frequency, so T' = ceil(T / 8) and 80 bands become 10. A basic block is two 3x3
convolutions (no bias) each with BatchNorm, ReLU between, added to the input (through a 1x1
convolution + BatchNorm where the shape changes), then ReLU. The published size has K = 256 (32
base channels): 5.32 M parameters, frame vectors of 256 x 10 = 2,560, flattened channel-major per
frame (WeSpeaker's layout; the input image is time x frequency here and frequency x time there,
the same network since every kernel and stride is square).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dasv_cli.model.frontends.base import FrontEnd, flatten_frames
from dasv_cli.model.geometry import RESNET_STAGES, geometry


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and a residual connection (projected where the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNetFrontEnd(FrontEnd):
    """A thin ResNet over a one-channel (time x frequency) image; submodules conv1, bn1, layer1..layer4."""

    def __init__(self, name: str = "ResNet34", kernel_size: int = 256, n_mels: int = 80) -> None:
        super().__init__()
        self.geometry = geometry(name, kernel_size, n_mels)  # checks that K/8 is a whole number of channels
        stages = RESNET_STAGES[name]
        base = kernel_size // 8
        self.conv1 = nn.Conv2d(1, base, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        c_in = base
        layers = []
        for s, count in enumerate(stages):
            width = base * 2**s
            blocks = [BasicBlock(c_in if i == 0 else width, width, 2 if s > 0 and i == 0 else 1) for i in range(count)]
            layers.append(nn.Sequential(*blocks))
            c_in = width
        self.layer1, self.layer2, self.layer3, self.layer4 = layers

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """[B, T, n_mels] -> [B, ceil(T / 8), K * ceil(n_mels / 8)]."""
        x = feats.unsqueeze(1)  # [B, 1, T, F]
        if self.conv1.weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)  # a channels_last model keeps that layout
        x = F.relu(self.bn1(self.conv1(x)))
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
        return flatten_frames(x)


__all__ = ["BasicBlock", "ResNetFrontEnd"]
