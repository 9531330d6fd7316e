"""SpeakerNet: front-end -> pooling -> FC block -> embedding, and margin softmax logits for training.

The network of "Double Multi-Head Attention for Speaker Verification" (India, Safari, Hernando;
ICASSP 2021, arXiv 2007.13199) and the baselines it was compared with. `ModelConfig` defaults are
the paper's setup (VGG4L with K=1024, Double MHA with 32 heads, 400-d embedding, AM-Softmax s=30,
m=0.4, 5,994 VoxCeleb2 speakers): 21.5 M parameters.

FC block, `numerics="paper"`:     e1 = BN1(ReLU(FC1(p)));  embedding = BN2(ReLU(FC2(e1)))
FC block, `numerics="original"`:  e1 = ReLU(FC1(p));       embedding = BN2(ReLU(FC2(e1)))
(the original code defines BN1 but never applies it; it also defines a third BatchNorm it never uses,
which dasv leaves out). The baselines' heads (`head`): "linear", embedding = FC(p) (WeSpeaker's
ResNets); "bn-linear", embedding = FC(BN(p)) (ECAPA-TDNN's); with either the margin softmax takes
the embedding itself (no `pre` layer), as theirs do. For training, `logits()` applies a linear layer then AM-Softmax (or AAM-Softmax,
`margin_type="aam"`); `init="kaiming"` re-draws the conv and linear weights He-normal.
The numerics also set the MHA score scaling and the head-drop rate (see pooling.py).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from dasv_cli.model.config import ModelConfig
from dasv_cli.model.frontends import build_front_end
from dasv_cli.model.margin import build_margin
from dasv_cli.model.pooling import build_pooling


class SpeakerNet(nn.Module):
    """front_end -> pooling -> head (fc1/bn1/fc2/bn2, or [pool_bn] fc1) = embedding; [pre] + am_softmax
    give training logits."""

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else ModelConfig()
        self.cfg = cfg
        self.front_end = build_front_end(cfg.front_end, cfg.kernel_size, cfg.n_mels)
        self.pooling = build_pooling(cfg.pooling, self.front_end.output_size, cfg.heads, cfg.mask_prob, cfg.numerics)
        e, pooled, paper = cfg.embedding_size, self.pooling.output_size, cfg.head == "paper"
        self.pool_bn = nn.BatchNorm1d(pooled) if cfg.head == "bn-linear" else None
        self.fc1 = nn.Linear(pooled, e)
        self.bn1 = nn.BatchNorm1d(e) if paper and cfg.numerics == "paper" else None
        self.fc2 = nn.Linear(e, e) if paper else None
        self.bn2 = nn.BatchNorm1d(e) if paper else None
        self.pre = nn.Linear(e, e) if paper else None
        self.am_softmax = build_margin(cfg.margin_type, e, cfg.num_speakers, cfg.scale, cfg.margin, cfg.annealing,
                                       cfg.margin_warmup)
        if cfg.init == "kaiming":
            kaiming_init(self)

    @property
    def min_frames(self) -> int:
        """Shortest input in frames (16 for VGG4L, 8 for VGG3L and ResNet34, 1 for ECAPA; one more
        than the stride with the original numerics' Statistical pooling: ModelConfig.min_frames)."""
        return self.cfg.min_frames

    @property
    def embedding_size(self) -> int:
        return self.cfg.embedding_size

    def _check_input(self, feats: torch.Tensor) -> None:
        if feats.dim() != 3 or feats.shape[-1] != self.cfg.n_mels:
            raise ValueError(
                f"SpeakerNet expects features [batch, frames, {self.cfg.n_mels}], got {list(feats.shape)}"
            )
        if feats.shape[1] < self.min_frames:
            raise ValueError(
                f"input has {feats.shape[1]} frames; {self.cfg.front_end} needs at least {self.min_frames} "
                f"frames ({self.min_frames * 10} ms at a 10 ms hop)"
            )

    def pool(self, feats: torch.Tensor) -> torch.Tensor:
        """Utterance vectors [B, pooled_size] (front-end + pooling)."""
        self._check_input(feats)
        return self.pooling(self.front_end(feats))

    def embed_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """The head: pooled vectors -> embeddings."""
        if self.fc2 is None:  # the baselines' one linear layer
            return self.fc1(pooled if self.pool_bn is None else self.pool_bn(pooled))
        e1 = F.relu(self.fc1(pooled))
        if self.bn1 is not None:
            e1 = self.bn1(e1)
        return self.bn2(F.relu(self.fc2(e1)))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Embeddings [B, embedding_size] for features [B, T, n_mels] with T >= min_frames."""
        return self.embed_pooled(self.pool(feats))

    def logits(
        self, embeddings: torch.Tensor, labels: torch.Tensor | None = None, step: int | None = None
    ) -> torch.Tensor:
        """AM-Softmax logits [B, num_speakers] (float32); the margin applies when labels are given."""
        return self.am_softmax(embeddings if self.pre is None else self.pre(embeddings), labels, step)


def kaiming_init(net: nn.Module) -> None:
    """He-normal weights (fan-out, ReLU gain) and zero biases for every convolution and linear layer,
    as ResNet and WeSpeaker initialise; BatchNorm and the margin classifier keep their own."""
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Conv1d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def count_parameters(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def count_macs(cfg: ModelConfig, frames: int) -> int:
    """Multiply-accumulates of one embedding (front-end, pooling, head; no classifier) for `frames`
    input frames: torch.utils.flop_counter counts matrix products and convolutions (2 FLOPs per
    MAC) on the meta device; elementwise work (BatchNorm, activations, softmax) is left out."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        net = SpeakerNet(cfg).eval()
        feats = torch.empty(1, frames, cfg.n_mels)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(feats)
    return counter.get_total_flops() // 2


def describe(cfg: ModelConfig, frames: int = 350) -> dict[str, Any]:
    """Parameter counts per part, output sizes and multiply-accumulates for `frames` input frames
    (built on the meta device)."""
    if frames < cfg.min_frames:
        raise ValueError(f"{frames} frames is shorter than the {cfg.front_end} minimum of {cfg.min_frames}")
    with torch.device("meta"):
        net = SpeakerNet(cfg)
    parts = {
        "front_end": count_parameters(net.front_end),
        "pooling": count_parameters(net.pooling),
        "embedding_block": count_parameters(net.pool_bn)
        + count_parameters(net.fc1)
        + count_parameters(net.bn1)
        + count_parameters(net.fc2)
        + count_parameters(net.bn2),
        "classifier": count_parameters(net.pre) + count_parameters(net.am_softmax),
    }
    t_out = cfg.geometry.output_frames(frames)
    macs = count_macs(cfg, frames)
    return {
        "config": cfg.to_dict(),
        "parameters": {**parts, "total": sum(parts.values()), "embedding_extractor": sum(parts.values()) - parts["classifier"]},
        "sizes": {
            "input": [frames, cfg.n_mels],
            "front_end": [t_out, cfg.frame_size],
            "pooling": [cfg.pooled_size],
            "embedding": [cfg.embedding_size],
            "logits": [cfg.num_speakers],
        },
        "min_frames": cfg.min_frames,
        "time": {"stride": cfg.geometry.time_stride, "receptive_field": cfg.geometry.receptive_field,
                 "global": cfg.geometry.time_global},
        # per second of input at the 10 ms hop; WeSpeaker's "FLOPs" (thop) are MACs
        "macs": {"input": macs, "per_second": round(macs * 100 / frames)},
        "head_size": cfg.frame_size // cfg.heads if cfg.pooling in ("DoubleMHA", "MHA") else None,
    }


__all__ = ["SpeakerNet", "kaiming_init", "count_parameters", "count_macs", "describe"]
