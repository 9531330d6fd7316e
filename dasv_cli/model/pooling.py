"""Poolings from frame vectors [B, T, D] to one utterance vector [B, D_out].

- `StatisticalPooling`: mean and standard deviation over time (the plain baseline), D_out = 2 D.
- `AttentionPooling`: one learned query, softmax over frames, D_out = D.
- `MultiHeadAttentionPooling` (MHA): D split into `heads` sub-vectors of size D/heads, one query per
  head, softmax over frames per head; the head contexts are concatenated, D_out = D.
- `AttentiveStatisticsPooling` (ASTP, ECAPA-TDNN's): attention weights per frame and per channel,
  computed from the frame and the utterance's mean and std (channel- and context-dependent), give a
  weighted mean and a weighted std, D_out = 2 D.
- `DoubleMHAPooling` (the paper's): MHA's head contexts c_h, then a second attention across heads
  (one query, softmax over heads) gives sum_h w_h c_h, D_out = D/heads. During training each head is
  dropped with a probability before that softmax, but never every head of an example.

All are batched tensor ops (no Python loops over heads or frames), so they run under autocast,
channels_last models and torch.compile without graph breaks. Softmaxes are computed in float32 (or float64 for float64 inputs).

Two numerics where the original research code and the paper disagree:
- "paper": MHA scores are divided by sqrt(head size); head dropping uses `mask_prob` as given.
- "original": the original code's arithmetic: scores divided by sqrt(number of heads); head dropping
  draws an integer in [0, int(1/mask_prob)) and drops on 0 (so 0.3 drops with probability 1/3);
  statistical pooling adds N(0, 1e-4^2) noise in training and uses the unbiased std.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dasv_cli.model.config import DEFAULT_NUMERICS, POOLINGS, check_numerics


def _fp32(t: torch.Tensor) -> torch.Tensor:
    """`t` in at least float32 (bf16/fp16 are upcast, float64 stays float64) for softmaxes and sums."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _xavier_normal_(param: torch.Tensor, fan_in: int, fan_out: int) -> None:
    """Xavier-normal init with explicit fans (the original initialised these as 2-D matrices)."""
    with torch.no_grad():
        param.normal_(0.0, math.sqrt(2.0 / (fan_in + fan_out)))


class StatisticalPooling(nn.Module):
    """Mean and standard deviation over frames: [B, T, D] -> [B, 2D].

    "paper": population std, floored at sqrt(1e-10) so one frame (or constant input) stays finite and
    differentiable. "original": unbiased std (NaN for a single frame, as the original), with N(0, eps^2)
    noise added to the frames in training.
    """

    def __init__(self, input_size: int, numerics: str = DEFAULT_NUMERICS, eps: float = 1e-4) -> None:
        super().__init__()
        self.input_size = input_size
        self.output_size = 2 * input_size
        self.numerics = check_numerics(numerics)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = _fp32(x)  # under bf16 autocast the noise (1e-4) and the statistics would be rounded away
        if self.numerics == "original":
            if self.training:
                xf = xf + torch.randn_like(xf) * self.eps
            return torch.cat((xf.mean(dim=1), xf.std(dim=1)), dim=1).to(x.dtype)
        mean = xf.mean(dim=1)
        var = (xf - mean.unsqueeze(1)).square().mean(dim=1)
        std = var.clamp_min(1e-10).sqrt()
        return torch.cat((mean, std), dim=1).to(x.dtype)


class AttentiveStatisticsPooling(nn.Module):
    """ASTP as in the ECAPA-TDNN paper (Desplanques et al. 2020, eq. 7-9), [B, T, D] -> [B, 2D].

    Scores e_t = W2 tanh(W1 [x_t; mean; std] + b1) + b2 (one per channel; mean and std of x over all
    frames give the global context), weights a_t = softmax over t per channel, output the weighted
    mean sum_t a_t x_t and std sqrt(sum_t a_t (x_t - mean_a)^2), floored at sqrt(1e-7). The
    statistics and the softmax are computed in float32 (or float64).
    """

    def __init__(self, input_size: int, bottleneck: int = 128, eps: float = 1e-7) -> None:
        super().__init__()
        self.input_size = input_size
        self.output_size = 2 * input_size
        self.eps = eps
        self.hidden = nn.Linear(3 * input_size, bottleneck)
        self.scores = nn.Linear(bottleneck, input_size)

    @staticmethod
    def _moments(x: torch.Tensor, w: torch.Tensor | None, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std over frames [B, D] (weighted by w [B, T, D] when given, else uniform)."""
        mean = x.mean(dim=1) if w is None else (w * x).sum(dim=1)
        dev = (x - mean.unsqueeze(1)).square()
        var = dev.mean(dim=1) if w is None else (w * dev).sum(dim=1)
        return mean, var.clamp_min(eps).sqrt()

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Weights [B, T, D] (float32, sum to 1 over T for each channel)."""
        mean, std = self._moments(_fp32(x), None, self.eps)
        t = x.shape[1]
        context = torch.cat((x, mean.to(x.dtype).unsqueeze(1).expand(-1, t, -1),
                             std.to(x.dtype).unsqueeze(1).expand(-1, t, -1)), dim=2)
        scores = self.scores(torch.tanh(self.hidden(context)))
        return torch.softmax(_fp32(scores), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = _fp32(x)
        mean, std = self._moments(xf, self.attention(x).to(xf.dtype), self.eps)
        return torch.cat((mean, std), dim=1).to(x.dtype)


class AttentionPooling(nn.Module):
    """Self-attention pooling: w_t = softmax_t(x_t . u), output sum_t w_t x_t. [B, T, D] -> [B, D]."""

    def __init__(self, input_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.output_size = input_size
        self.query = nn.Parameter(torch.empty(input_size))
        _xavier_normal_(self.query, 1, input_size)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Weights over frames [B, T] (float32, each row sums to 1)."""
        scores = torch.matmul(x, self.query.to(x.dtype))
        return torch.softmax(_fp32(scores), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.attention(x).to(x.dtype)
        return torch.bmm(w.unsqueeze(1), x).squeeze(1)


class MultiHeadAttentionPooling(nn.Module):
    """MHA pooling: per head h, w_{t,h} = softmax_t(x_{t,h} . u_h / scale); c_h = sum_t w_{t,h} x_{t,h}.

    x_{t,h} is the h-th contiguous slice of size D/heads of frame t. scale = sqrt(D/heads) ("paper") or
    sqrt(heads) ("original"). Output: the head contexts concatenated, [B, D].
    """

    def __init__(self, input_size: int, heads: int, numerics: str = DEFAULT_NUMERICS) -> None:
        super().__init__()
        if heads < 1 or input_size % heads:
            raise ValueError(f"frame vector size {input_size} is not divisible by {heads} heads")
        self.input_size = input_size
        self.heads = heads
        self.head_size = input_size // heads
        self.output_size = input_size
        self.numerics = check_numerics(numerics)
        self.scale = math.sqrt(self.head_size if numerics == "paper" else heads)
        self.query = nn.Parameter(torch.empty(heads, self.head_size))
        _xavier_normal_(self.query, heads, self.head_size)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Weights over frames per head [B, T, H] (float32, sums to 1 over T)."""
        b, t, _ = x.shape
        xh = x.reshape(b, t, self.heads, self.head_size)
        scores = torch.einsum("bthd,hd->bth", xh, self.query.to(x.dtype))
        return torch.softmax(_fp32(scores) / self.scale, dim=1)

    def contexts(self, x: torch.Tensor) -> torch.Tensor:
        """Head context vectors [B, H, D/H]."""
        b, t, _ = x.shape
        xh = x.reshape(b, t, self.heads, self.head_size)
        w = self.attention(x).to(x.dtype)
        return torch.einsum("bth,bthd->bhd", w, xh)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.contexts(x).flatten(1)


class DoubleMHAPooling(nn.Module):
    """Double MHA: MHA head contexts c_h [B, H, D/H], then w_h = softmax_h(c_h . v), output sum_h w_h c_h.

    In training each head is dropped (its score set to -inf) with probability `drop_probability`;
    where that would drop every head of an example, one head chosen uniformly at random is kept, so
    the softmax is always defined. Eval mode is deterministic (no dropping).
    """

    def __init__(self, input_size: int, heads: int, mask_prob: float = 0.3, numerics: str = DEFAULT_NUMERICS) -> None:
        super().__init__()
        if not 0.0 <= mask_prob < 1.0:
            raise ValueError(f"mask_prob must be in [0, 1), got {mask_prob}")
        self.utterance = MultiHeadAttentionPooling(input_size, heads, numerics)
        self.input_size = input_size
        self.heads = heads
        self.head_size = input_size // heads
        self.output_size = self.head_size
        self.numerics = numerics
        self.mask_prob = mask_prob
        self.head_query = nn.Parameter(torch.empty(self.head_size))
        _xavier_normal_(self.head_query, 1, self.head_size)

    @property
    def drop_probability(self) -> float:
        """The probability with which each head is dropped in training."""
        if self.mask_prob <= 0.0:
            return 0.0
        if self.numerics == "original":
            # random_(int(1/p)) > 0 keeps a head: dropped with probability 1 / int(1/p)
            return 1.0 / int(1.0 / self.mask_prob)
        return self.mask_prob

    def head_mask(self, batch: int, device: torch.device) -> torch.Tensor:
        """Bool [batch, heads], True = dropped; never True for every head of a row."""
        dropped = torch.rand(batch, self.heads, device=device) < self.drop_probability
        all_dropped = dropped.all(dim=1, keepdim=True)
        rescue = torch.randint(0, self.heads, (batch, 1), device=device)
        keep_one = torch.arange(self.heads, device=device).unsqueeze(0) == rescue
        return dropped & ~(all_dropped & keep_one)

    def head_attention(self, contexts: torch.Tensor) -> torch.Tensor:
        """Weights over heads [B, H] (float32, sums to 1), with head dropping in training."""
        scores = _fp32(torch.matmul(contexts, self.head_query.to(contexts.dtype)))
        if self.training and self.drop_probability > 0.0:
            mask = self.head_mask(scores.shape[0], scores.device)
            scores = scores.masked_fill(mask, float("-inf"))
        return torch.softmax(scores, dim=1)

    def attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(frame weights [B, T, H], head weights [B, H]) for inspection."""
        return self.utterance.attention(x), self.head_attention(self.utterance.contexts(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.utterance.contexts(x)
        w = self.head_attention(c).to(c.dtype)
        return torch.bmm(w.unsqueeze(1), c).squeeze(1)


def build_pooling(
    name: str, input_size: int, heads: int = 32, mask_prob: float = 0.3, numerics: str = DEFAULT_NUMERICS
) -> nn.Module:
    """A pooling by name: DoubleMHA, MHA, Attention, Statistical or ASTP (each has .output_size)."""
    if name == "DoubleMHA":
        return DoubleMHAPooling(input_size, heads, mask_prob, numerics)
    if name == "MHA":
        return MultiHeadAttentionPooling(input_size, heads, numerics)
    if name == "Attention":
        return AttentionPooling(input_size)
    if name == "Statistical":
        return StatisticalPooling(input_size, numerics)
    if name == "ASTP":
        return AttentiveStatisticsPooling(input_size)
    raise ValueError(f"unknown pooling {name!r}; choose one of {', '.join(POOLINGS)}")
