"""AM-Softmax (additive margin softmax, Wang et al. 2018) with the original tool's optional annealing.

logits = s * (cos(x, W_j) - m' * [j == label]), with m' = m / (1 + a) when annealing, where
a = max(0, 1000 / (1 + 1e-4 step)^2), else m' = m. Without labels the logits are s * cos (no margin).
Feed the logits to cross-entropy. The cosines are computed in float32 even under autocast: a bf16
cosine times s = 30 would move logits by ~0.1.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def annealing_alpha(step: int | float) -> float:
    """The original tool's annealing weight a(step) = max(0, 1000 / (1 + 1e-4 step)^2)."""
    return max(0.0, 1000.0 / (1.0 + 0.0001 * float(step)) ** 2)


class AMSoftmax(nn.Module):
    """Cosine classifier with an additive margin on the target class.

    weight: [num_speakers, embedding_size] (one row per speaker, normalised at use).
    """

    def __init__(
        self, embedding_size: int, num_speakers: int, scale: float = 30.0, margin: float = 0.4, annealing: bool = False
    ) -> None:
        super().__init__()
        self.embedding_size = embedding_size
        self.num_speakers = num_speakers
        self.scale = float(scale)
        self.margin = float(margin)
        self.annealing = bool(annealing)
        self.weight = nn.Parameter(torch.empty(num_speakers, embedding_size))
        with torch.no_grad():  # xavier normal as in the original (fans of an [E, N] matrix)
            self.weight.normal_(0.0, math.sqrt(2.0 / (embedding_size + num_speakers)))

    def margin_factor(self, step: int | float | None = None) -> float:
        """1 / (1 + a(step)) with annealing (step None counts as 0, as in the original), else 1."""
        if not self.annealing:
            return 1.0
        return 1.0 / (1.0 + annealing_alpha(0 if step is None else step))

    def cosine(self, x: torch.Tensor) -> torch.Tensor:
        """cos(x_i, W_j) [B, num_speakers] in float32 (float64 for float64 inputs)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
            xn = F.normalize(x.to(dtype), dim=1, eps=1e-12)
            wn = F.normalize(self.weight.to(dtype), dim=1, eps=1e-12)
            return xn @ wn.t()

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None, step: int | float | None = None
    ) -> torch.Tensor:
        """Logits [B, num_speakers] (float32): s * (cos - m' onehot) with labels, s * cos without."""
        if x.dim() != 2 or x.shape[1] != self.embedding_size:
            raise ValueError(f"AM-Softmax expects [batch, {self.embedding_size}] inputs, got {list(x.shape)}")
        cos = self.cosine(x)
        if labels is None:
            return self.scale * cos
        if labels.shape != (x.shape[0],):
            raise ValueError(f"labels must have shape [{x.shape[0]}], got {list(labels.shape)}")
        m = self.margin * self.margin_factor(step)
        onehot = F.one_hot(labels.long(), self.num_speakers).to(cos.dtype)
        return self.scale * (cos - m * onehot)
