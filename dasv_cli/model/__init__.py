"""dasv.model: the Double MHA speaker network in pure torch (no files, no CLI, no data loading).

    from dasv_cli.model import ModelConfig, SpeakerNet
    net = SpeakerNet(ModelConfig())          # the paper's network, 21.5 M parameters
    emb = net.eval()(feats)                  # feats [batch, frames >= 16, 80] -> [batch, 400]

ModelConfig (model/config.py) needs no torch; the torch parts are imported on first use, so the CLI
can read the network options without paying for torch at start-up.
"""

from __future__ import annotations

import importlib
from typing import Any

from dasv_cli.model.config import ModelConfig

_TORCH_PARTS = {
    "AMSoftmax": "margin",
    "AAMSoftmax": "margin",
    "build_margin": "margin",
    "annealing_alpha": "margin",
    "VGGFrontEnd": "frontends",
    "ResNetFrontEnd": "frontends",
    "ECAPAFrontEnd": "frontends",
    "build_front_end": "frontends",
    "SpeakerNet": "network",
    "count_parameters": "network",
    "count_macs": "network",
    "kaiming_init": "network",
    "describe": "network",
    "AttentionPooling": "pooling",
    "AttentiveStatisticsPooling": "pooling",
    "DoubleMHAPooling": "pooling",
    "MultiHeadAttentionPooling": "pooling",
    "StatisticalPooling": "pooling",
    "build_pooling": "pooling",
}


def __getattr__(name: str) -> Any:
    """The torch-backed names, imported from their module when first asked for."""
    module = _TORCH_PARTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = ["ModelConfig", *_TORCH_PARTS]
