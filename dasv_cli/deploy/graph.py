"""The torch modules that are exported: raw log-mel (or waveform) in, embedding out, nothing outside.

`ExtractorGraph` does what `dasv embed` does around the network, inside the graph: the per-utterance
normalisation over the whole input (the checkpoint's cmn / cmvn / none) and, for an utterance shorter
than the network's minimum, repetition in time up to that minimum (after normalising, as eval.embed
does). Both are written without Python branches on the input's length, so one graph serves every
length: the repetition is a gather of frame indices `arange(max(T, min_frames)) % T`, which is the
identity for T >= min_frames.

`DftLogMel` is dsp.logmel's recipe with the STFT written as a strided conv1d over a fixed DFT basis
(window times cos / -sin), which every ONNX runtime runs; torch.stft and rfft need opset 17 STFT or
complex tensors. A waveform shorter than one FFT frame is zero-padded at the end before pre-emphasis,
exactly as dsp.logmel does; one shorter than one analysis window is for the caller to refuse.

Every utterance of a batch has the same length: nothing is padded, so an embedding never depends on
its batch mates.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dasv_cli.dsp.logmel import NORM_MODES, LogMelConfig, analysis_window, mel_filterbank

NORM_EPS = 1e-5  # dsp.logmel.normalise's eps for CMVN


def repeat_to_min_frames(x: torch.Tensor, min_frames: int) -> torch.Tensor:
    """[B, T, F] -> [B, max(T, min_frames), F]: a short input repeated in time, a long one unchanged."""
    t = x.shape[1]  # a traced size while exporting, so the graph keeps T symbolic
    n = torch.clamp(torch.as_tensor(t), min=min_frames)
    return x.index_select(1, torch.remainder(torch.arange(n), t))


class ExtractorGraph(nn.Module):
    """Raw log-mel [B, T, n_mels] -> embeddings [B, E]: normalisation, minimum length, network (eval)."""

    def __init__(self, net: nn.Module, norm: str) -> None:
        super().__init__()
        if norm not in NORM_MODES:
            raise ValueError(f"unknown normalisation {norm!r}")
        self.net = net
        self.norm = norm
        self.min_frames = int(net.min_frames)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = feats
        if self.norm != "none":
            mean = x.mean(dim=1, keepdim=True)
            if self.norm == "cmvn":
                std = (x - mean).square().mean(dim=1, keepdim=True).sqrt()
                x = (x - mean) / (std + NORM_EPS)
            else:
                x = x - mean
        x = repeat_to_min_frames(x, self.min_frames)
        net = self.net
        return net.embed_pooled(net.pooling(net.front_end(x)))


class DftLogMel(nn.Module):
    """Waveforms [B, N] (float in [-1, 1), N >= win_length) -> log-mel [B, frames, n_mels], as dsp.logmel."""

    def __init__(self, cfg: LogMelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        window = torch.from_numpy(analysis_window(cfg)).float()  # zero-padded, centred Hamming window
        mel = torch.from_numpy(np.ascontiguousarray(mel_filterbank(cfg).T)).float()  # Slaney filters [bins, n_mels]
        bins = cfg.n_fft // 2 + 1
        n = torch.arange(cfg.n_fft, dtype=torch.float64)
        k = torch.arange(bins, dtype=torch.float64).unsqueeze(1)
        angle = 2.0 * math.pi * ((k * n) % cfg.n_fft) / cfg.n_fft  # reduced mod n_fft: exact angles
        basis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window.double()
        self.register_buffer("basis", basis.float().unsqueeze(1), persistent=False)  # [2 bins, 1, n_fft]
        self.register_buffer("mel", mel.clone(), persistent=False)  # [bins, n_mels]
        self.bins = bins

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        n = wave.shape[1]
        total = torch.clamp(torch.as_tensor(n), min=cfg.n_fft)
        x = F.pad(wave, (0, cfg.n_fft)).index_select(1, torch.arange(total))  # zero-padded to one frame
        prev = torch.cat([x[:, :1], x[:, :-1]], dim=1)  # y[0] = (1 - a) x[0], y[i] = x[i] - a x[i-1]
        y = (x - cfg.preemphasis * prev) * cfg.scale
        spec = F.conv1d(y.unsqueeze(1), self.basis, stride=cfg.hop_length)  # [B, 2 bins, frames]
        re, im = spec[:, :self.bins], spec[:, self.bins:]
        mag = torch.sqrt(re * re + im * im)
        out = torch.matmul(mag.transpose(1, 2), self.mel)
        return torch.log(torch.clamp(out, min=cfg.log_floor))


class WaveformGraph(nn.Module):
    """Waveforms [B, N] at the recipe's rate -> embeddings [B, E]: DftLogMel then ExtractorGraph."""

    def __init__(self, net: nn.Module, norm: str, cfg: LogMelConfig) -> None:
        super().__init__()
        self.logmel = DftLogMel(cfg)
        self.extractor = ExtractorGraph(net, norm)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.extractor(self.logmel(wave))
