"""SpecAugment-style masks (Park et al. 2019) on a batch of training windows, on its own device.

Each window gets FREQ_MASKS bands of 0..FREQ_WIDTH mel bands and TIME_MASKS spans of
0..TIME_WIDTH frames set to 0 (after CMN, 0 is the utterance's mean: the mask removes information
without adding a level). Where the masks fall is drawn from a generator keyed by (seed, rank, step,
micro-batch), never from the global RNG: the masks are a pure function of the update count, so a
resumed run masks exactly what an uninterrupted one would, whatever else draws random numbers.
Only the small draws are made on the CPU; the masks are built and applied on the batch's device.
"""

from __future__ import annotations

FREQ_MASKS, FREQ_WIDTH = 2, 8  # of 80 bands
TIME_MASKS, TIME_WIDTH = 2, 20  # frames (0.2 s at a 10 ms hop)


def mask_generator(seed: int, rank: int, step: int, micro: int):
    """The torch.Generator for one micro-batch's masks."""
    import torch

    g = torch.Generator()
    g.manual_seed((int(seed) * 1_000_003 + int(rank) * 7_919 + int(step) * 131 + int(micro) * 17 + 0x5EC) & (2**63 - 1))
    return g


def _spans(g, batch: int, count: int, width: int, size: int):
    """[batch, count] starts and widths of spans of 0..width inside 0..size."""
    import torch

    widths = torch.randint(0, width + 1, (batch, count), generator=g)
    widths = torch.minimum(widths, torch.tensor(size))
    starts = (torch.rand(batch, count, generator=g) * (size - widths + 1).float()).long()
    return starts, widths


def _mask(starts, widths, size: int, device):
    """Boolean [batch, size]: True inside any of the spans."""
    import torch

    pos = torch.arange(size, device=device).view(1, 1, size)
    lo = starts.to(device).unsqueeze(-1)
    hi = lo + widths.to(device).unsqueeze(-1)
    return ((pos >= lo) & (pos < hi)).any(dim=1)


def spec_augment(feats, seed: int, rank: int, step: int, micro: int):
    """`feats` [B, T, F] with the micro-batch's time and frequency masks set to 0 (a new tensor)."""
    batch, frames, bands = feats.shape
    g = mask_generator(seed, rank, step, micro)
    fs, fw = _spans(g, batch, FREQ_MASKS, FREQ_WIDTH, bands)
    ts, tw = _spans(g, batch, TIME_MASKS, TIME_WIDTH, frames)
    freq = _mask(fs, fw, bands, feats.device).unsqueeze(1)  # [B, 1, F]
    time = _mask(ts, tw, frames, feats.device).unsqueeze(2)  # [B, T, 1]
    return feats.masked_fill(freq | time, 0.0)


__all__ = ["spec_augment", "mask_generator", "FREQ_MASKS", "FREQ_WIDTH", "TIME_MASKS", "TIME_WIDTH"]
