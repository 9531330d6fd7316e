"""`dasv export`: a checkpoint's embedding extractor -> one self-describing ONNX file.

Exporter: torch's TorchScript-based exporter (`torch.onnx.export(dynamo=False)`). Measured with
torch 2.13 on this network (Double MHA, ceil-mode max-pool, in-graph CMN and minimum-length
repetition): it exports in seconds and needs only `onnx`; the torch.export-based exporter
(`dynamo=True`) also converts it, to the same agreement, but needs onnxscript as well, takes 5-8x as
long, and cannot lower `arange(...) % T` with a symbolic T (it needs the index arithmetic written as
`i - (i // T) * T` and `torch.sym_max`). Shape-dependent Python is kept out of the traced code, and a
TracerWarning (a shape the trace would freeze) fails the export rather than writing a wrong graph.

Every export is checked before it is reported done: onnxruntime runs the written file on inputs of
several lengths (one below the network's minimum) and its embeddings are compared with the torch
module that was traced.
"""

from __future__ import annotations

import io
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dasv_cli.deploy.extra import import_extra
from dasv_cli.deploy.metadata import INPUT_NAMES, OUTPUT_NAME, ModelInfo
from dasv_cli.errors import DasvError, InputError

DEFAULT_OPSET = 17


@dataclass
class ExportReport:
    """What was written and how well the ONNX graph agrees with the traced torch module."""

    output: str
    input: str
    norm: str
    embedding_size: int
    parameters: int
    bytes: int
    opset: int
    seconds: float
    check: dict[str, Any] = field(default_factory=dict)  # lengths, max_abs_diff, min_cosine

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _recipe(ckpt: dict[str, Any], n_mels: int, name: str):
    """The checkpoint's feature recipe as a LogMelConfig (the paper's when it names none)."""
    from dasv_cli.dsp.logmel import LogMelConfig
    from dasv_cli.eval.embed import checkpoint_recipe

    recipe = checkpoint_recipe(ckpt)
    known = set(LogMelConfig.__dataclass_fields__)
    try:
        cfg = LogMelConfig.from_dict({k: v for k, v in (recipe or {}).items() if k in known})
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: the checkpoint's feature recipe is not usable ({exc})") from None
    if cfg.n_mels != n_mels:
        raise InputError(f"{name}: its feature recipe has {cfg.n_mels} mel bands but the network takes {n_mels}")
    return cfg


def _trace_to_onnx(graph: Any, example: Any, input_name: str, time_axis: str, opset: int) -> bytes:
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notices are not for users
        warnings.simplefilter("error", torch.jit.TracerWarning)  # a frozen shape would be a wrong graph
        with torch.no_grad():
            torch.onnx.export(
                graph, (example,), buf, dynamo=False, opset_version=opset, do_constant_folding=True,
                input_names=[input_name], output_names=[OUTPUT_NAME],
                dynamic_axes={input_name: {0: "batch", 1: time_axis}, OUTPUT_NAME: {0: "batch"}},
            )
    return buf.getvalue()


def _check_inputs(info: ModelInfo, cfg: Any, seed: int = 0) -> list[np.ndarray]:
    """Batches [2, length, ...] of several lengths, one shorter than the network's minimum."""
    rng = np.random.default_rng(seed)
    if info.input == "waveform":
        lengths = [cfg.win_length + 37, cfg.n_fft + cfg.hop_length * (info.min_frames - 3), 16000, 40000]
        return [(0.1 * rng.standard_normal((2, n))).astype(np.float32) for n in lengths]
    lengths = [max(1, info.min_frames - 5), info.min_frames, 137, 401]
    return [(5.0 + 2.0 * rng.standard_normal((2, t, info.n_mels))).astype(np.float32) for t in lengths]


def _agreement(graph: Any, onnx_path: Path, info: ModelInfo, cfg: Any) -> dict[str, Any]:
    import torch

    from dasv_cli.deploy.runtime import OnnxExtractor

    runtime = OnnxExtractor(onnx_path, threads=1)
    worst_diff, worst_cos, lengths = 0.0, 1.0, []
    for batch in _check_inputs(info, cfg):
        with torch.no_grad():
            ref = graph(torch.from_numpy(batch)).numpy().astype(np.float64)
        got = runtime.run(batch).astype(np.float64)
        worst_diff = max(worst_diff, float(np.abs(got - ref).max()))
        cos = (got * ref).sum(1) / np.maximum(np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1), 1e-30)
        worst_cos = min(worst_cos, float(cos.min()))
        lengths.append(int(batch.shape[1]))
    return {"lengths": lengths, "max_abs_diff": worst_diff, "min_cosine": worst_cos}


def export_onnx(checkpoint: str | Path, output: str | Path, *, waveform: bool = False,
                opset: int = DEFAULT_OPSET) -> ExportReport:
    """Write the embedding extractor of `checkpoint` to `output` (ONNX, atomically) and check it.

    Features in (`feats` [batch, frames, n_mels], raw log-mel as the feature store holds them) or,
    with `waveform`, `waveform` [batch, samples] at the recipe's rate; `embedding` [batch, E] out.
    The graph applies the checkpoint's normalisation itself; batch and time axes are dynamic.
    """
    import torch

    from dasv_cli import __version__
    from dasv_cli.deploy.graph import ExtractorGraph, WaveformGraph
    from dasv_cli.eval.embed import checkpoint_norm, load_extractor
    from dasv_cli.io.atomic import atomic_path
    from dasv_cli.io.embeddings import file_sha256

    onnx = import_extra("onnx")
    import_extra("onnxruntime")  # the check below needs it: fail before the work, not after
    started = time.perf_counter()
    checkpoint, output = Path(checkpoint), Path(output)
    model, ckpt = load_extractor(checkpoint, "cpu")
    norm = checkpoint_norm(ckpt)
    cfg = _recipe(ckpt, int(model.cfg.n_mels), str(checkpoint))
    kind = "waveform" if waveform else "features"
    graph = (WaveformGraph(model, norm, cfg) if waveform else ExtractorGraph(model, norm)).eval()
    info = ModelInfo(
        input=kind, norm=norm, recipe=cfg.to_dict(), model_config=model.cfg.to_dict(),
        embedding_size=int(model.embedding_size), n_mels=int(model.cfg.n_mels), min_frames=int(model.min_frames),
        dasv_version=__version__,
        checkpoint={"name": checkpoint.name, "sha256": file_sha256(checkpoint), "step": int(ckpt.get("step") or 0)},
    )
    example = torch.zeros(2, 32000) if waveform else torch.zeros(2, 200, info.n_mels)
    example.normal_(generator=torch.Generator().manual_seed(0))
    data = _trace_to_onnx(graph, example, INPUT_NAMES[kind], "samples" if waveform else "frames", opset)
    proto = onnx.load_from_string(data)
    for key, value in info.to_props().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (f"dasv {__version__} embedding extractor from {checkpoint.name}: {kind} in, "
                        f"{info.embedding_size}-d embedding out (normalisation '{norm}' inside)")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:  # pragma: no cover - an exporter bug, not user input
        raise DasvError(f"the exported graph does not validate: {str(exc).splitlines()[0]}") from None
    with atomic_path(output, "ONNX model") as tmp:
        onnx.save(proto, tmp)
        check = _agreement(graph, Path(tmp), info, cfg)
    from dasv_cli.model.network import count_parameters

    used = count_parameters(model) - count_parameters(model.pre) - count_parameters(model.am_softmax)
    return ExportReport(output=str(output), input=kind, norm=norm, embedding_size=info.embedding_size,
                        parameters=used, bytes=output.stat().st_size, opset=opset,
                        seconds=time.perf_counter() - started, check=check)
