"""ECAPA-TDNN front-end (Desplanques, Thienpondt, Demuynck; Interspeech 2020): log-mel frames
[B, T, n_mels] -> frame vectors [B, T, M], no time downsampling.

A k=5 convolution to C channels, then three SE-Res2Net blocks with dilations 2, 3 and 4, then
multi-layer feature aggregation: the three blocks' outputs concatenated (3 C) and a 1x1 convolution
to M = 1536 channels (M = 3 min(C, 512): 1536 at both published sizes, C = 512 and 1024, as in the
paper and WeSpeaker; smaller for tiny networks). Every convolution is followed by ReLU then
BatchNorm (the order of the paper's code and WeSpeaker's), except the aggregation's (ReLU only: the
pooling follows).

An SE-Res2Net block: 1x1 conv; a Res2Net conv (C split into 8 groups; group i > 0 is added to the
previous group's output, then passes a k=3 dilated conv, so later groups see ever wider context;
the last group passes unchanged); 1x1 conv; squeeze-excitation (channel gates from the mean over all
frames through a 128-unit bottleneck); plus the block's input. The SE mean is over the whole input:
the network is time-global (see frontends/base.py).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dasv_cli.model.frontends.base import FrontEnd
from dasv_cli.model.geometry import ECAPA_DILATIONS, ECAPA_SCALE, geometry

SE_BOTTLENECK = 128


class ConvReluBN(nn.Module):
    """Conv1d -> ReLU -> BatchNorm1d over [B, C, T]."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation)
        self.bn = nn.BatchNorm1d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


class Res2Conv(nn.Module):
    """Res2Net's hierarchical k=3 dilated convolutions over `scale` channel groups (C -> C)."""

    def __init__(self, channels: int, dilation: int, scale: int = ECAPA_SCALE) -> None:
        super().__init__()
        self.width = channels // scale
        self.convs = nn.ModuleList(ConvReluBN(self.width, self.width, 3, dilation) for _ in range(scale - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = torch.split(x, self.width, dim=1)
        out, y = [], groups[0]
        for i, conv in enumerate(self.convs):
            y = conv(y if i == 0 else y + groups[i])
            out.append(y)
        out.append(groups[-1])
        return torch.cat(out, dim=1)


class SqueezeExcitation(nn.Module):
    """Channel gates sigmoid(W2 relu(W1 mean_t x)) times x: [B, C, T] -> [B, C, T]."""

    def __init__(self, channels: int, bottleneck: int = SE_BOTTLENECK) -> None:
        super().__init__()
        self.linear1 = nn.Linear(channels, bottleneck)
        self.linear2 = nn.Linear(bottleneck, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = torch.sigmoid(self.linear2(F.relu(self.linear1(x.mean(dim=2)))))
        return x * gates.unsqueeze(2)


class SERes2Block(nn.Module):
    """1x1 conv, Res2Net conv, 1x1 conv, squeeze-excitation, plus the input."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = ConvReluBN(channels, channels)
        self.res2 = Res2Conv(channels, dilation)
        self.conv2 = ConvReluBN(channels, channels)
        self.se = SqueezeExcitation(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.se(self.conv2(self.res2(self.conv1(x))))


class ECAPAFrontEnd(FrontEnd):
    """ECAPA-TDNN up to (not including) its pooling: submodules layer1, blocks (3), mfa."""

    def __init__(self, kernel_size: int = 512, n_mels: int = 80) -> None:
        super().__init__()
        self.geometry = geometry("ECAPA", kernel_size, n_mels)  # checks C splits into 8 groups
        c = kernel_size
        self.layer1 = ConvReluBN(n_mels, c, 5)
        self.blocks = nn.ModuleList(SERes2Block(c, d) for d in ECAPA_DILATIONS)
        self.mfa = nn.Conv1d(len(ECAPA_DILATIONS) * c, self.geometry.frame_size, 1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """[B, T, n_mels] -> [B, T, M]."""
        x = self.layer1(feats.transpose(1, 2))
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return F.relu(self.mfa(torch.cat(outs, dim=1))).transpose(1, 2)


__all__ = ["ECAPAFrontEnd", "SERes2Block", "Res2Conv", "SqueezeExcitation", "ConvReluBN"]
