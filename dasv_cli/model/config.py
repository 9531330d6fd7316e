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

FRONT_ENDS = {"VGG3L": 3, "VGG4L": 4}  # name -> conv blocks
POOLINGS = ("DoubleMHA", "MHA", "Attention", "Statistical")
NUMERICS = ("paper", "original")
# The original code's numerics are the default: on the real-speech benchmark (bench/train_real.py
# --steps 400 / 1000) they reached a lower EER and minDCF at equal updates. The poolings use it too.
DEFAULT_NUMERICS = "original"
ROLES = ("shape", "training", "data")
MARGIN_TYPES = ("am", "aam")  # AM-Softmax (the paper's) | AAM-Softmax (ArcFace)
INITS = ("default", "kaiming")


def front_end_blocks(name: str) -> int:
    """Number of conv blocks of a named front-end (ValueError for an unknown name)."""
    try:
        return FRONT_ENDS[name]
    except KeyError:
        raise ValueError(f"unknown front-end {name!r}; choose one of {', '.join(FRONT_ENDS)}") from None


def output_frames(frames: int, blocks: int) -> int:
    """Frames (or bands) left after `blocks` ceil-mode 2x pools."""
    for _ in range(blocks):
        frames = math.ceil(frames / 2)
    return frames


def check_numerics(numerics: str) -> str:
    """`numerics` when it is "paper" or "original" (ValueError otherwise)."""
    if numerics not in NUMERICS:
        raise ValueError(f"unknown numerics {numerics!r}; choose 'paper' or 'original'")
    return numerics


def _option(default: Any, help: str, role: str, choices: tuple[str, ...] | None = None) -> Any:
    return field(default=default, metadata={"help": help, "role": role, "choices": choices})


@dataclass
class ModelConfig:
    """Network hyper-parameters; the defaults are the paper's setup (with the original code's numerics)."""

    front_end: str = _option("VGG4L", "VGG3L | VGG4L.", "shape", tuple(FRONT_ENDS))
    kernel_size: int = _option(1024, "K, channels of the last conv block.", "shape")
    pooling: str = _option("DoubleMHA", "DoubleMHA | MHA | Attention | Statistical.", "shape", POOLINGS)
    heads: int = _option(32, "Attention heads.", "shape")
    mask_prob: float = _option(0.3, "Double MHA head-drop probability.", "training")
    embedding_size: int = _option(400, "Embedding dimension.", "shape")
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
        front_end_blocks(self.front_end)
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
        divisor = 2 ** (self.blocks - 1)
        if self.kernel_size % divisor:
            raise ValueError(f"kernel_size {self.kernel_size} must be a multiple of {divisor} for {self.front_end}")
        if self.pooling in ("DoubleMHA", "MHA") and self.frame_size % self.heads:
            raise ValueError(
                f"{self.heads} heads do not divide the frame vector size {self.frame_size} "
                f"(K={self.kernel_size} x {self.frame_size // self.kernel_size} bands)"
            )
        if not 0.0 <= float(self.mask_prob) < 1.0:
            raise ValueError(f"mask_prob must be in [0, 1), got {self.mask_prob}")
        if not float(self.scale) > 0:
            raise ValueError(f"scale must be positive, got {self.scale}")
        if self.margin_type == "aam" and not 0.0 <= self.margin < math.pi / 2:
            raise ValueError(f"an angular margin must be in [0, pi/2), got {self.margin}")

    @property
    def blocks(self) -> int:
        return FRONT_ENDS[self.front_end]

    @property
    def frame_size(self) -> int:
        """D: size of the front-end's frame vectors, K x ceil(n_mels / 2^blocks)."""
        return self.kernel_size * output_frames(self.n_mels, self.blocks)

    @property
    def pooled_size(self) -> int:
        """Size of the pooling output."""
        if self.pooling == "DoubleMHA":
            return self.frame_size // self.heads
        if self.pooling == "Statistical":
            return 2 * self.frame_size
        return self.frame_size

    @property
    def min_frames(self) -> int:
        """Shortest input (frames) the front-end accepts: one frame vector after all pools."""
        return 2**self.blocks

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
        return dataclasses.replace(self, **changes)


def options(*roles: str) -> list[dataclasses.Field]:
    """The ModelConfig fields of the given roles, in declaration order (what a command offers as flags)."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown option role(s): {', '.join(sorted(unknown))}")
    return [f for f in fields(ModelConfig) if f.metadata["role"] in roles]


__all__ = ["ModelConfig", "FRONT_ENDS", "POOLINGS", "NUMERICS", "DEFAULT_NUMERICS", "MARGIN_TYPES", "INITS", "options",
           "front_end_blocks", "output_frames", "check_numerics"]
