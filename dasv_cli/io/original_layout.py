"""How the original tool's network is laid out, and how its state dict maps onto dasv's network.

The original SpeakerClassifier's names and layouts -> SpeakerNet (numerics="original"):

    front_end.convXY.{weight,bias}              -> front_end.convXY.*
    poolingLayer.utteranceAttention.query [d,H] -> pooling.utterance.query [H,d]   (Double MHA)
    poolingLayer.headsAttention.att [d,1]       -> pooling.head_query [d]          (Double MHA)
    poolingLayer.query [d,H]                    -> pooling.query [H,d]             (MHA)
    poolingLayer.att [D,1]                      -> pooling.query [D]               (Attention)
    fc1, fc2, preLayer                          -> fc1, fc2, pre
    b2 (BatchNorm)                              -> bn2
    b1, b3 (BatchNorms the original never applies) -> checked and dropped
    predictionLayer.W [E,N]                     -> am_softmax.weight [N,E]

The expected shapes come from the architecture's arithmetic alone (io never builds a network);
whoever builds the network from the config loads the result strictly, which proves the mapping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dasv_cli.errors import InputError

POOLINGS = ("DoubleMHA", "MHA", "Attention", "Statistical")
BLOCKS = {"VGG3L": 3, "VGG4L": 4}  # conv blocks of the original front-ends
SIZES = ("kernel_size", "heads", "embedding_size", "n_mels", "num_speakers")
DROPPED_PREFIXES = ("b1.", "b3.")


def infer_config(sd: dict[str, Any], s: dict[str, Any], path: Path) -> dict[str, Any]:
    """ModelConfig fields from the settings, falling back to the tensor shapes."""

    def shape(key: str) -> tuple[int, ...]:
        if key not in sd:
            raise InputError(f"{path}: state dict has no '{key}'")
        return tuple(sd[key].shape)

    front_end = s.get("front_end") or ("VGG4L" if "front_end.conv41.weight" in sd else "VGG3L")
    if front_end not in ("VGG3L", "VGG4L"):
        raise InputError(f"{path}: front-end {front_end!r} is not supported (VGG3L or VGG4L)")
    last = "front_end.conv42.weight" if front_end == "VGG4L" else "front_end.conv32.weight"
    kernel_size = s.get("kernel_size") or shape(last)[0]
    pooling = s.get("pooling_method")
    if pooling is None:
        if "poolingLayer.utteranceAttention.query" in sd:
            pooling = "DoubleMHA"
        elif "poolingLayer.query" in sd:
            pooling = "MHA"
        elif "poolingLayer.att" in sd:
            pooling = "Attention"
        else:
            pooling = "Statistical"
    if pooling not in POOLINGS:
        raise InputError(
            f"{path}: pooling {pooling!r} is not supported by dasv (DoubleMHA, MHA, Attention, Statistical)"
        )
    heads = s.get("heads_number")
    if heads is None:
        key = {"DoubleMHA": "poolingLayer.utteranceAttention.query", "MHA": "poolingLayer.query"}.get(pooling)
        heads = shape(key)[1] if key else 32
    embedding_size = s.get("embedding_size") or shape("fc1.weight")[0]
    w = shape("predictionLayer.W")
    if len(w) != 2:
        raise InputError(f"{path}: tensor 'predictionLayer.W' has shape {list(w)}, expected [embedding, speakers]")
    num_speakers = w[1]
    try:
        fields = _config_fields(front_end, kernel_size, pooling, heads, embedding_size, num_speakers, s)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: unreadable network settings ({exc})") from None
    for name in SIZES:
        if fields[name] < 1:
            raise InputError(f"{path}: unreadable network settings ({name} = {fields[name]})")
    return fields


def _config_fields(front_end: str, kernel_size: Any, pooling: str, heads: Any, embedding_size: Any,
                   num_speakers: int, s: dict[str, Any]) -> dict[str, Any]:
    return {
        "front_end": front_end,
        "kernel_size": int(kernel_size),
        "pooling": pooling,
        "heads": int(heads),
        "mask_prob": float(s.get("mask_prob", 0.3)),
        "embedding_size": int(embedding_size),
        "n_mels": int(s.get("feature_size", 80)),
        "num_speakers": int(num_speakers),
        "scale": float(s.get("scalingFactor", 30.0)),
        "margin": float(s.get("marginFactor", 0.4)),
        "annealing": bool(s.get("annealing", False)),
        "numerics": "original",
    }


def expected_shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The state dict of dasv's network for `cfg` (numerics "original"): names and shapes, in the
    network's order, from the architecture's arithmetic (VGG blocks of two 3x3 convolutions with
    channels K/2^(blocks-1) ... K, each halving the bands; pooling; FC block; AM-Softmax)."""
    blocks = BLOCKS[cfg["front_end"]]
    k, e, heads = cfg["kernel_size"], cfg["embedding_size"], cfg["heads"]
    shapes: dict[str, tuple[int, ...]] = {}
    bands = cfg["n_mels"]
    channels = [1] + [k // 2 ** (blocks - 1 - b) for b in range(blocks)]
    for b in range(1, blocks + 1):
        c_in, c_out = channels[b - 1], channels[b]
        for j, width in ((1, c_in), (2, c_out)):
            shapes[f"front_end.conv{b}{j}.weight"] = (c_out, width, 3, 3)
            shapes[f"front_end.conv{b}{j}.bias"] = (c_out,)
        bands = -(-bands // 2)  # ceil-mode 2x pool
    frame = k * bands
    pooled = {"DoubleMHA": frame // heads, "Statistical": 2 * frame}.get(cfg["pooling"], frame)
    if cfg["pooling"] == "DoubleMHA":
        shapes["pooling.head_query"] = (frame // heads,)
        shapes["pooling.utterance.query"] = (heads, frame // heads)
    elif cfg["pooling"] == "MHA":
        shapes["pooling.query"] = (heads, frame // heads)
    elif cfg["pooling"] == "Attention":
        shapes["pooling.query"] = (frame,)
    shapes.update({"fc1.weight": (e, pooled), "fc1.bias": (e,), "fc2.weight": (e, e), "fc2.bias": (e,)})
    for name in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"bn2.{name}"] = (e,)
    shapes["bn2.num_batches_tracked"] = ()
    shapes.update({"pre.weight": (e, e), "pre.bias": (e,), "am_softmax.weight": (cfg["num_speakers"], e)})
    return shapes


def _source_key(dasv_key: str, pooling: str) -> tuple[str, str]:
    """The original name of a SpeakerNet (numerics="original") state-dict entry, and how its layout
    differs: "same", "transpose" (2-D, swapped) or "column" ([n, 1] in the original, [n] in dasv)."""
    if dasv_key.startswith(("front_end.", "fc1.", "fc2.")):
        return dasv_key, "same"
    if dasv_key.startswith("bn2."):
        return "b2." + dasv_key[4:], "same"
    if dasv_key.startswith("pre."):
        return "preLayer." + dasv_key[4:], "same"
    if dasv_key == "am_softmax.weight":
        return "predictionLayer.W", "transpose"
    if dasv_key == "pooling.utterance.query":
        return "poolingLayer.utteranceAttention.query", "transpose"
    if dasv_key == "pooling.head_query":
        return "poolingLayer.headsAttention.att", "column"
    if dasv_key == "pooling.query":
        return ("poolingLayer.att", "column") if pooling == "Attention" else ("poolingLayer.query", "transpose")
    raise KeyError(dasv_key)


def _original_shape(dasv_shape: tuple[int, ...], layout: str) -> list[int]:
    if layout == "transpose":
        return list(reversed(dasv_shape))
    if layout == "column":
        return [*dasv_shape, 1]
    return list(dasv_shape)


def map_state(sd: dict[str, Any], cfg: dict[str, Any], path: Path) -> dict[str, Any]:
    """The original state dict `sd` under dasv's names and layouts, every tensor checked against the
    shape `cfg` implies; b1/b3 are checked and dropped, anything else unknown is refused."""
    import torch

    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for key, shape in expected_shapes(cfg).items():
        src, layout = _source_key(key, cfg["pooling"])
        if src not in sd:
            if src.endswith("num_batches_tracked"):  # absent in checkpoints of very old torch
                state[key] = torch.zeros((), dtype=torch.long)
                continue
            raise InputError(f"{path}: state dict has no '{src}' (needed for {cfg['front_end']}/{cfg['pooling']})")
        want = _original_shape(shape, layout)
        tensor = sd[src]
        if list(tensor.shape) != want:
            raise InputError(
                f"{path}: tensor '{src}' has shape {list(tensor.shape)}, expected {want} for "
                f"{cfg['front_end']} K={cfg['kernel_size']} {cfg['pooling']} heads={cfg['heads']} "
                f"embedding={cfg['embedding_size']}"
            )
        if layout == "transpose":
            tensor = tensor.t()
        elif layout == "column":
            tensor = tensor.reshape(-1)
        dtype = torch.long if key.endswith("num_batches_tracked") else torch.get_default_dtype()
        state[key] = tensor.detach().to(dtype=dtype).contiguous().clone()
        used.add(src)

    e = cfg["embedding_size"]
    for key in sorted(set(sd) - used):
        if key.startswith(DROPPED_PREFIXES):
            t = sd[key]
            if t.dim() == 1 and t.shape[0] != e:
                raise InputError(f"{path}: tensor '{key}' has shape {list(t.shape)}, expected [{e}]")
            continue
        raise InputError(f"{path}: unexpected tensor '{key}' in the state dict (not part of the original network)")
    return state


__all__ = ["infer_config", "expected_shapes", "map_state"]
