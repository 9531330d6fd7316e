"""Front-ends: log-mel frames [B, T, n_mels] -> frame vectors [B, T', D], one module per backbone family.

- vgg: VGG3L, VGG4L (the paper's);
- resnet: ResNet34 (the thin ResNet of WeSpeaker and voxceleb_trainer);
- ecapa: ECAPA-TDNN.
Each is a `FrontEnd` (base.py): `output_size`, `min_frames`, `time_stride`, `receptive_field`,
`time_global` and `output_frames(T)` describe its output and its time arithmetic.
"""

from __future__ import annotations

from dasv_cli.model.frontends.base import FrontEnd
from dasv_cli.model.frontends.ecapa import ECAPAFrontEnd
from dasv_cli.model.frontends.resnet import ResNetFrontEnd
from dasv_cli.model.frontends.vgg import VGGFrontEnd
from dasv_cli.model.geometry import FRONT_END_NAMES, RESNET_STAGES, VGG_BLOCKS


def build_front_end(name: str, kernel_size: int = 1024, n_mels: int = 80) -> FrontEnd:
    """The front-end `name` (VGG3L, VGG4L, ResNet34, ECAPA) with K = `kernel_size`."""
    if name in VGG_BLOCKS:
        return VGGFrontEnd(VGG_BLOCKS[name], kernel_size, n_mels)
    if name in RESNET_STAGES:
        return ResNetFrontEnd(name, kernel_size, n_mels)
    if name == "ECAPA":
        return ECAPAFrontEnd(kernel_size, n_mels)
    raise ValueError(f"unknown front-end {name!r}; choose one of {', '.join(FRONT_END_NAMES)}")


__all__ = ["FrontEnd", "VGGFrontEnd", "ResNetFrontEnd", "ECAPAFrontEnd", "build_front_end"]
