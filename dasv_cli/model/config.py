"""ModelConfig: the one place a network option is declared. Torch-free, so the CLI imports it cheaply.

Each field carries, in its metadata, what a command needs to offer it as a flag:
- `help`: the text after the flag in `--help` (the command adds the default);
- `choices`: the allowed values, where there is a fixed set;
- `role`: "shape" options change the network's sizes or parameter count (`dasv model` offers them),
  "training" options change only how it learns, "data" options come from the training data
  (`dasv train` reads them from the feature store and the labels, so they are not its flags).

`dasv train` offers every option that is not "data" (TrainConfig holds them as its own fields) and
`dasv model` every "shape" and "data" option, so a new network option is added here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from dasv_cli.model.geometry import DEFAULT_KERNEL_SIZE, FRONT_END_NAMES, VGG_BLOCKS, Geometry, geometry, halvings

FRONT_ENDS = VGG_BLOCKS  # the VGG front-ends: name -> conv blocks (the original tool's networks)
POOLINGS = ("DoubleMHA", "MHA", "Attention", "Statistical", "ASTP")
# The embedding head after the pooling: the paper's two FC layers, or the one linear layer of the
# ResNet/ECAPA baselines (WeSpeaker's ResNet: linear; its ECAPA: BatchNorm of the pooled vector, linear).
HEADS = ("paper", "linear", "bn-linear")
NUMERICS = ("paper", "original")
# The original code's numerics are the default: on the real-speech benchmark (bench/train_real.py
# --steps 400 / 1000) they reached a lower EER and minDCF at equal updates. The poolings use it too.
DEFAULT_NUMERICS = "original"
ROLES = ("shape", "training", "data")
MARGIN_TYPES = ("am", "aam")  # AM-Softmax (the paper's) | AAM-Softmax (ArcFace)
INITS = ("default", "kaiming")


def front_end_blocks(name: str) -> int:
    """Number of conv blocks of a named VGG front-end (ValueError for any other name)."""
    try:
        return FRONT_ENDS[name]
    except KeyError:
        raise ValueError(f"{name!r} is not a VGG front-end; choose one of {', '.join(FRONT_ENDS)}") from None


output_frames = halvings  # frames (or bands) left after `blocks` ceil-mode 2x pools


def check_numerics(numerics: str) -> str:
    """`numerics` when it is "paper" or "original" (ValueError otherwise)."""
    if numerics not in NUMERICS:
        raise ValueError(f"unknown numerics {numerics!r}; choose 'paper' or 'original'")
    return numerics


def _option(default: Any, help: str, role: str, choices: tuple[str, ...] | None = None, kind: type | None = None) -> Any:
    """A field with its flag's metadata; `kind` is the value type where the default (None) does not say it."""
    kind = kind if kind is not None else type(default)
    return field(default=default, metadata={"help": help, "role": role, "choices": choices, "type": kind})


@dataclass
class ModelConfig:
    """Network hyper-parameters; the defaults are the paper's setup (with the original code's numerics)."""

    front_end: str = _option("VGG4L", "VGG3L | VGG4L (the paper's) | ResNet34 (thin, basic blocks [3, 4, 6, 3]) | "
                             "ECAPA (ECAPA-TDNN).", "shape", FRONT_END_NAMES)
    kernel_size: int | None = _option(None, "K, channels of the last conv block: VGG K; ResNet34 8 x its base "
                                      "channels; ECAPA C. Unset: the published size (VGG 1024, ResNet34 256, "
                                      "ECAPA 512).", "shape", kind=int)
    pooling: str = _option("DoubleMHA", "DoubleMHA | MHA | Attention | Statistical | ASTP (attentive statistics).",
                           "shape", POOLINGS)
    heads: int = _option(32, "Attention heads.", "shape")
    mask_prob: float = _option(0.3, "Double MHA head-drop probability.", "training")
    embedding_size: int = _option(400, "Embedding dimension.", "shape")
    head: str = _option("paper", "Embedding head: paper (FC + ReLU, FC + ReLU + BN) | linear (one linear layer, "
                        "the ResNet baselines') | bn-linear (BN of the pooled vector, then linear: ECAPA's).",
                        "shape", HEADS)
    n_mels: int = _option(80, "Log-mel bands.", "data")
    num_speakers: int = _option(5994, "Training speakers.", "data")  # VoxCeleb2 dev in the paper
    margin_type: str = _option("am", "am (AM-Softmax, cos - m) | aam (AAM-Softmax/ArcFace, cos(theta + m)).",
                               "training", MARGIN_TYPES)
    scale: float = _option(30.0, "Margin softmax scale s.", "training")
    margin: float = _option(0.4, "Margin softmax margin m.", "training")
    annealing: bool = _option(False, "The original tool's margin annealing.", "training")
    margin_warmup: int = _option(0, "Updates over which the margin grows linearly from 0 to m (0: none).",
                                 "training")
    init: str = _option("default", "default (torch's layer defaults) | kaiming (He normal, fan-out, for the "
                        "convolutions and linear layers).", "training", INITS)
    numerics: str = _option(DEFAULT_NUMERICS, "paper | original (the original code's numerics).", "shape", NUMERICS)

    def __post_init__(self) -> None:
        if self.front_end not in FRONT_END_NAMES:
            raise ValueError(f"unknown front-end {self.front_end!r}; choose one of {', '.join(FRONT_END_NAMES)}")
        if self.kernel_size is None:
            self.kernel_size = DEFAULT_KERNEL_SIZE[self.front_end]
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; choose one of {', '.join(HEADS)}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}; choose one of {', '.join(POOLINGS)}")
        check_numerics(self.numerics)
        for name in ("kernel_size", "heads", "embedding_size", "n_mels", "num_speakers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
            setattr(self, name, int(value))
        if self.margin_type not in MARGIN_TYPES:
            raise ValueError(f"unknown margin_type {self.margin_type!r}; choose one of {', '.join(MARGIN_TYPES)}")
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; choose one of {', '.join(INITS)}")
        if isinstance(self.margin_warmup, bool) or not isinstance(self.margin_warmup, numbers.Integral) \
                or self.margin_warmup < 0:
            raise ValueError(f"margin_warmup must be a whole number of updates >= 0, got {self.margin_warmup!r}")
        self.margin_warmup = int(self.margin_warmup)
        for name in ("mask_prob", "scale", "margin"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"{name} must be a number, got {value!r}")
            setattr(self, name, float(value))
        self.annealing = bool(self.annealing)
        geometry(self.front_end, self.kernel_size, self.n_mels)  # K suits the front-end
        if self.pooling in ("DoubleMHA", "MHA") and self.frame_size % self.heads:
            raise ValueError(f"{self.heads} heads do not divide the frame vector size {self.frame_size} ({self.front_end} "
                             f"K={self.kernel_size})")
        if not 0.0 <= float(self.mask_prob) < 1.0:
            raise ValueError(f"mask_prob must be in [0, 1), got {self.mask_prob}")
        if not float(self.scale) > 0:
            raise ValueError(f"scale must be positive, got {self.scale}")
        if self.margin_type == "aam" and not 0.0 <= self.margin < math.pi / 2:
            raise ValueError(f"an angular margin must be in [0, pi/2), got {self.margin}")

    @property
    def geometry(self) -> Geometry:
        """The front-end's sizes, time stride, receptive field (model/geometry.py)."""
        return geometry(self.front_end, self.kernel_size, self.n_mels)

    @property
    def frame_size(self) -> int:
        """D: size of the front-end's frame vectors (VGG: K x ceil(n_mels / 2^blocks))."""
        return self.geometry.frame_size

    @property
    def pooled_size(self) -> int:
        """Size of the pooling output."""
        if self.pooling == "DoubleMHA":
            return self.frame_size // self.heads
        if self.pooling in ("Statistical", "ASTP"):
            return 2 * self.frame_size
        return self.frame_size

    @property
    def min_frames(self) -> int:
        """Shortest input (frames) the network accepts: one frame vector after all pools, or two
        where the pooling is Statistical with the original numerics, whose unbiased std of one
        frame vector is NaN (with ceil-mode pools, one frame more than the time stride gives two)."""
        if self.pooling == "Statistical" and self.numerics == "original":
            return max(self.geometry.min_frames, self.geometry.time_stride + 1)
        return self.geometry.min_frames

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """From a plain dict (a checkpoint's config["model"]); unknown keys -> ValueError."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown model config key(s): {', '.join(unknown)}")
        return cls(**d)

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with `changes`; K is carried over, so another front-end at its published size is
        replace(front_end=..., kernel_size=None)."""
        return dataclasses.replace(self, **changes)


def options(*roles: str) -> list[dataclasses.Field]:
    """The ModelConfig fields of the given roles, in declaration order (what a command offers as flags)."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown option role(s): {', '.join(sorted(unknown))}")
    return [f for f in fields(ModelConfig) if f.metadata["role"] in roles]


__all__ = ["ModelConfig", "FRONT_ENDS", "FRONT_END_NAMES", "DEFAULT_KERNEL_SIZE", "POOLINGS", "HEADS", "NUMERICS", "DEFAULT_NUMERICS", "MARGIN_TYPES", "INITS", "options",
           "front_end_blocks", "output_frames", "check_numerics"]
