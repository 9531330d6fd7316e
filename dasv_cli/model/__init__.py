"""dasv.model: the Double MHA speaker network in pure torch (no files, no CLI, no data loading).

    from dasv_cli.model import ModelConfig, SpeakerNet
    net = SpeakerNet(ModelConfig())          # the paper's network, 21.5 M parameters
    emb = net.eval()(feats)                  # feats [batch, frames >= 16, 80] -> [batch, 400]
"""

from dasv_cli.model.frontends import VGGFrontEnd, build_front_end
from dasv_cli.model.margin import AMSoftmax, annealing_alpha
from dasv_cli.model.network import ModelConfig, SpeakerNet, count_parameters, describe
from dasv_cli.model.pooling import (
    AttentionPooling,
    DoubleMHAPooling,
    MultiHeadAttentionPooling,
    StatisticalPooling,
    build_pooling,
)

__all__ = [
    "AMSoftmax",
    "AttentionPooling",
    "DoubleMHAPooling",
    "ModelConfig",
    "MultiHeadAttentionPooling",
    "SpeakerNet",
    "StatisticalPooling",
    "VGGFrontEnd",
    "annealing_alpha",
    "build_front_end",
    "build_pooling",
    "count_parameters",
    "describe",
]
