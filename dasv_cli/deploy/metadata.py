"""What an exported model says about itself (ONNX metadata_props, strings only), written by export
and read by the runtime: the input kind, the feature recipe, the normalisation, sizes, provenance."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from dasv_cli.errors import InputError

ONNX_FORMAT = "dasv-onnx-extractor"
ONNX_FORMAT_VERSION = 1
INPUTS = ("features", "waveform")
INPUT_NAMES = {"features": "feats", "waveform": "waveform"}
OUTPUT_NAME = "embedding"


@dataclass(frozen=True)
class ModelInfo:
    """An exported extractor's metadata, parsed."""

    input: str  # "features" ([B, T, n_mels] raw log-mel) or "waveform" ([B, N] float in [-1, 1))
    norm: str  # the normalisation the graph applies itself
    recipe: dict[str, Any]  # LogMelConfig.to_dict() of the features it expects (or computes)
    model_config: dict[str, Any]
    embedding_size: int
    n_mels: int
    min_frames: int
    dasv_version: str
    checkpoint: dict[str, Any]  # name, sha256, step of the source checkpoint

    @property
    def input_name(self) -> str:
        return INPUT_NAMES[self.input]

    def to_props(self) -> dict[str, str]:
        """The metadata_props entries (every value a string, as ONNX requires)."""
        return {
            "dasv_format": ONNX_FORMAT,
            "dasv_format_version": str(ONNX_FORMAT_VERSION),
            "dasv_version": self.dasv_version,
            "input": self.input,
            "norm": self.norm,
            "recipe": json.dumps(self.recipe, sort_keys=True),
            "model_config": json.dumps(self.model_config, sort_keys=True),
            "embedding_size": str(self.embedding_size),
            "n_mels": str(self.n_mels),
            "min_frames": str(self.min_frames),
            "checkpoint": json.dumps(self.checkpoint, sort_keys=True),
        }

    @classmethod
    def from_props(cls, props: Mapping[str, str], name: str) -> "ModelInfo":
        """Parse metadata_props; a model without dasv's metadata is an InputError naming `name`."""
        if props.get("dasv_format") != ONNX_FORMAT:
            raise InputError(f"{name}: an ONNX model without dasv's metadata (not made by `dasv export`)")
        try:
            version = int(props["dasv_format_version"])
            if version > ONNX_FORMAT_VERSION:
                raise InputError(f"{name}: exported by a newer dasv (format {version}); upgrade dasv")
            info = cls(
                input=props["input"], norm=props["norm"], recipe=json.loads(props["recipe"]),
                model_config=json.loads(props["model_config"]), embedding_size=int(props["embedding_size"]),
                n_mels=int(props["n_mels"]), min_frames=int(props["min_frames"]),
                dasv_version=props.get("dasv_version", "?"), checkpoint=json.loads(props.get("checkpoint", "{}")),
            )
        except KeyError as exc:
            raise InputError(f"{name}: dasv metadata has no {exc.args[0]!r} entry") from None
        except (ValueError, TypeError) as exc:
            raise InputError(f"{name}: unreadable dasv metadata ({exc})") from None
        if info.input not in INPUTS:
            raise InputError(f"{name}: unknown input kind {info.input!r} in its metadata")
        return info
