"""The poolings of model.pooling in an incremental form: a state updated with frame vectors a chunk
at a time and finalised to the pooled vector, equal to the one-pass forward to float rounding, so a
recording of any length is pooled without holding its whole frame-level sequence (eval.chunked).

- Statistical: count, mean and sum of squared deviations per channel in float64, merged chunk by
  chunk (Chan et al.'s parallel variance), finalised with the pooling's own std ("paper": population,
  floored at sqrt(1e-10); "original": unbiased, NaN for one frame vector).
- Attention, MHA: a softmax over time done with a running maximum score and running sums rescaled
  when it grows (the log-sum-exp trick), in float64; the scores themselves are computed as forward
  computes them (in the input's dtype, then float32, divided by the scale).
- DoubleMHA: MHA's stream for the head contexts; its second attention, across heads, runs on the
  finalised contexts through the module's own head_attention (head dropping happens only in
  training mode, as in forward, so an eval-mode stream is deterministic).
- ASTP has none: its frame scores depend on the utterance's mean and std, known only after the last
  frame, so it needs every frame vector twice (`stream_of` gives None and the caller pools whole).

Meant for inference (eval mode, no gradients); Statistical's "original" training noise is not drawn.
"""

from __future__ import annotations

from typing import Optional, Protocol

import torch
from torch import nn

from dasv_cli.model.pooling import (AttentionPooling, DoubleMHAPooling, MultiHeadAttentionPooling,
                                    StatisticalPooling, _fp32)


class PoolingStream(Protocol):
    """A pooling's running state over the frames seen so far."""

    def update(self, x: torch.Tensor) -> None: ...  # frame vectors [B, t, D], t >= 1

    def result(self) -> torch.Tensor: ...  # the pooled vectors [B, D_out] of every frame given


class StatisticalStream:
    """Running count, mean and squared deviations (float64) -> StatisticalPooling's (mean, std)."""

    def __init__(self, pooling: StatisticalPooling) -> None:
        self.pooling = pooling
        self.count = 0
        self.mean: Optional[torch.Tensor] = None
        self.m2: Optional[torch.Tensor] = None
        self.dtype = torch.float32

    def update(self, x: torch.Tensor) -> None:
        self.dtype = x.dtype
        xd = x.double()
        n = int(x.shape[1])
        mean = xd.mean(dim=1)
        m2 = (xd - mean.unsqueeze(1)).square().sum(dim=1)
        if self.mean is None or self.m2 is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta.square() * (self.count * n / total)
        self.count = total

    def result(self) -> torch.Tensor:
        if self.mean is None or self.m2 is None:
            raise ValueError("no frames were pooled")
        if self.pooling.numerics == "original":
            std = (self.m2 / (self.count - 1)).sqrt() if self.count > 1 else torch.full_like(self.m2, float("nan"))
        else:
            std = (self.m2 / self.count).clamp_min(1e-10).sqrt()
        return torch.cat((self.mean, std), dim=1).to(self.dtype)


class SoftmaxStream:
    """sum_t softmax_t(s_t) v_t per (batch, head), from chunks of scores s [B, t, H] and values
    v [B, t, H, d]: a running maximum m, sum of exp(s - m) and exp(s - m)-weighted values (float64)."""

    def __init__(self) -> None:
        self.top: Optional[torch.Tensor] = None  # [B, H]
        self.norm: Optional[torch.Tensor] = None  # [B, H]
        self.acc: Optional[torch.Tensor] = None  # [B, H, d]

    def update(self, scores: torch.Tensor, values: torch.Tensor) -> None:
        s = scores.double()
        top = s.amax(dim=1)
        if self.top is not None:
            top = torch.maximum(top, self.top)
        e = torch.exp(s - top.unsqueeze(1))
        norm, acc = e.sum(dim=1), torch.einsum("bth,bthd->bhd", e, values.double())
        if self.top is not None and self.norm is not None and self.acc is not None:
            rescale = torch.exp(self.top - top)  # <= 1: the old sums in the new maximum's units
            norm = norm + self.norm * rescale
            acc = acc + self.acc * rescale.unsqueeze(2)
        self.top, self.norm, self.acc = top, norm, acc

    def result(self) -> torch.Tensor:
        """[B, H, d] float64."""
        if self.norm is None or self.acc is None:
            raise ValueError("no frames were pooled")
        return self.acc / self.norm.unsqueeze(2)


class AttentionStream:
    """AttentionPooling's sum_t softmax_t(x_t . u) x_t, a chunk at a time."""

    def __init__(self, pooling: AttentionPooling) -> None:
        self.pooling = pooling
        self.softmax = SoftmaxStream()
        self.dtype = torch.float32

    def update(self, x: torch.Tensor) -> None:
        self.dtype = x.dtype
        scores = _fp32(torch.matmul(x, self.pooling.query.to(x.dtype)))
        self.softmax.update(scores.unsqueeze(2), x.unsqueeze(2))

    def result(self) -> torch.Tensor:
        return self.softmax.result()[:, 0].to(self.dtype)


class MHAStream:
    """MultiHeadAttentionPooling's head contexts c_h, a chunk at a time; result() concatenates them."""

    def __init__(self, pooling: MultiHeadAttentionPooling) -> None:
        self.pooling = pooling
        self.softmax = SoftmaxStream()
        self.dtype = torch.float32

    def update(self, x: torch.Tensor) -> None:
        p = self.pooling
        self.dtype = x.dtype
        b, t, _ = x.shape
        xh = x.reshape(b, t, p.heads, p.head_size)
        scores = torch.einsum("bthd,hd->bth", xh, p.query.to(x.dtype))
        self.softmax.update(_fp32(scores) / p.scale, xh)

    def contexts(self) -> torch.Tensor:
        """Head context vectors [B, H, D/H] in the input's dtype."""
        return self.softmax.result().to(self.dtype)

    def result(self) -> torch.Tensor:
        return self.contexts().flatten(1)


class DoubleMHAStream:
    """DoubleMHAPooling: MHA's stream, then the attention across heads on the finalised contexts."""

    def __init__(self, pooling: DoubleMHAPooling) -> None:
        self.pooling = pooling
        self.utterance = MHAStream(pooling.utterance)

    def update(self, x: torch.Tensor) -> None:
        self.utterance.update(x)

    def result(self) -> torch.Tensor:
        c = self.utterance.contexts()
        w = self.pooling.head_attention(c).to(c.dtype)
        return torch.bmm(w.unsqueeze(1), c).squeeze(1)


def stream_of(pooling: nn.Module) -> Optional[PoolingStream]:
    """A fresh incremental state for `pooling`, or None for a pooling that cannot be streamed (ASTP,
    or one this module does not know)."""
    if isinstance(pooling, DoubleMHAPooling):
        return DoubleMHAStream(pooling)
    if isinstance(pooling, MultiHeadAttentionPooling):
        return MHAStream(pooling)
    if isinstance(pooling, AttentionPooling):
        return AttentionStream(pooling)
    if isinstance(pooling, StatisticalPooling):
        return StatisticalStream(pooling)
    return None
