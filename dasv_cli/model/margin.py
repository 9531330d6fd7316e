"""Margin softmax classifiers: AM-Softmax (Wang et al. 2018, the paper's) and AAM-Softmax (ArcFace,
Deng et al. 2019, the modern recipes' choice), with the original tool's annealing and a margin warm-up.

AM:  logits = s * (cos(x, W_j) - m' * [j == label])
AAM: logits = s * (cos(theta_j + m' * [j == label])), theta_j = arccos cos(x, W_j); where theta + m'
     would pass pi (cos theta <= cos(pi - m')) the target logit is s * (cos - m' sin m'), as in
     InsightFace and WeSpeaker, so that the target logit keeps falling as theta grows.
m' = m * warm(step) / (1 + a(step)): a = max(0, 1000 / (1 + 1e-4 step)^2) with annealing (else 0),
warm = min(1, step / margin_warmup) with a warm-up (else 1). Both are pure functions of the update
count, so a resumed run applies the margin an uninterrupted one would. Without labels the logits are
s * cos (no margin). Feed the logits to cross-entropy. The cosines are computed in float32 even under
autocast: a bf16 cosine times s = 30 would move logits by ~0.1.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from dasv_cli.model.config import MARGIN_TYPES


def annealing_alpha(step: int | float) -> float:
    """The original tool's annealing weight a(step) = max(0, 1000 / (1 + 1e-4 step)^2)."""
    return max(0.0, 1000.0 / (1.0 + 0.0001 * float(step)) ** 2)


class AMSoftmax(nn.Module):
    """Cosine classifier with an additive margin on the target cosine.

    weight: [num_speakers, embedding_size] (one row per speaker, normalised at use).
    """

    def __init__(self, embedding_size: int, num_speakers: int, scale: float = 30.0, margin: float = 0.4,
                 annealing: bool = False, margin_warmup: int = 0) -> None:
        super().__init__()
        self.embedding_size = embedding_size
        self.num_speakers = num_speakers
        self.scale = float(scale)
        self.margin = float(margin)
        self.annealing = bool(annealing)
        self.margin_warmup = int(margin_warmup)
        self.weight = nn.Parameter(torch.empty(num_speakers, embedding_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier normal as in the original (fans of an [E, N] matrix)."""
        with torch.no_grad():
            self.weight.normal_(0.0, math.sqrt(2.0 / (self.embedding_size + self.num_speakers)))

    def margin_factor(self, step: int | float | None = None) -> float:
        """m' / m at this update: warm-up ramp times 1 / (1 + a(step)) (step None counts as 0)."""
        step = 0 if step is None else step
        factor = 1.0 / (1.0 + annealing_alpha(step)) if self.annealing else 1.0
        if self.margin_warmup > 0:
            factor *= min(1.0, float(step) / self.margin_warmup)
        return factor

    def cosine(self, x: torch.Tensor) -> torch.Tensor:
        """cos(x_i, W_j) [B, num_speakers] in float32 (float64 for float64 inputs)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
            xn = F.normalize(x.to(dtype), dim=1, eps=1e-12)
            wn = F.normalize(self.weight.to(dtype), dim=1, eps=1e-12)
            return xn @ wn.t()

    def target(self, cos: torch.Tensor, m: float) -> torch.Tensor:
        """The target cosine with margin m (AM: cos - m)."""
        return cos - m

    def untarget(self, value: torch.Tensor, m: float) -> torch.Tensor:
        """The inverse of `target`: the plain cosine behind a margined target value."""
        return value + m

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None, step: int | float | None = None
    ) -> torch.Tensor:
        """Logits [B, num_speakers] (float32): s * margined cosines with labels, s * cos without."""
        if x.dim() != 2 or x.shape[1] != self.embedding_size:
            raise ValueError(f"{type(self).__name__} expects [batch, {self.embedding_size}] inputs, "
                             f"got {list(x.shape)}")
        cos = self.cosine(x)
        if labels is None:
            return self.scale * cos
        if labels.shape != (x.shape[0],):
            raise ValueError(f"labels must have shape [{x.shape[0]}], got {list(labels.shape)}")
        m = self.margin * self.margin_factor(step)
        onehot = F.one_hot(labels.long(), self.num_speakers).to(torch.bool)
        return self.scale * torch.where(onehot, self.target(cos, m), cos)

    def margin_free(self, logits: torch.Tensor, labels: torch.Tensor, step: int | float | None = None) -> torch.Tensor:
        """The margin-free logits s * cos behind `forward(x, labels, step)`'s (for the accuracy)."""
        m = self.margin * self.margin_factor(step)
        rows = torch.arange(labels.shape[0], device=labels.device)
        out = logits.detach().float().clone()
        out[rows, labels] = self.scale * self.untarget(out[rows, labels] / self.scale, m)
        return out


class AAMSoftmax(AMSoftmax):
    """ArcFace: an additive angular margin, cos(theta + m) on the target (InsightFace's fallback
    cos - m sin m past pi - m)."""

    def target(self, cos: torch.Tensor, m: float) -> torch.Tensor:
        sine = torch.sqrt((1.0 - cos * cos).clamp(0.0, 1.0))
        phi = cos * math.cos(m) - sine * math.sin(m)
        return torch.where(cos > math.cos(math.pi - m), phi, cos - m * math.sin(m))

    def untarget(self, value: torch.Tensor, m: float) -> torch.Tensor:
        # target is increasing in cos: its arc branch gives values in (-1, cos m], the fallback values
        # up to -(cos m + m sin m) < -1; the midpoint of that gap tells them apart.
        gap = -(1.0 + math.cos(m) + m * math.sin(m)) / 2.0
        arc = torch.cos(torch.arccos(value.clamp(-1.0, 1.0)) - m)
        return torch.where(value > gap, arc, value + m * math.sin(m))


def build_margin(margin_type: str, embedding_size: int, num_speakers: int, scale: float, margin: float,
                 annealing: bool = False, margin_warmup: int = 0) -> AMSoftmax:
    """The classifier of `margin_type` ("am" or "aam")."""
    classes = {"am": AMSoftmax, "aam": AAMSoftmax}
    if margin_type not in classes:
        raise ValueError(f"unknown margin type {margin_type!r}; choose one of {', '.join(MARGIN_TYPES)}")
    return classes[margin_type](embedding_size, num_speakers, scale, margin, annealing, margin_warmup)
