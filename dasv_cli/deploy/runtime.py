"""The onnxruntime extractor: a `dasv export` file in, embeddings out, no checkpoint or network code.

`OnnxExtractor` reads what it needs from the model's own metadata (input kind, recipe, normalisation,
sizes). Like eval.embed, it embeds whole utterances and batches only utterances of equal length, so
an embedding never depends on its batch mates; unlike the eager path, the caller passes the *raw*
log-mel features (as a feature store holds them): the graph normalises them itself, and repeats an
utterance shorter than the network's minimum.

Waveforms can be embedded with either kind of export: a waveform graph takes them as they are, a
features graph gets dsp.logmel's features of them first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dasv_cli.deploy.extra import import_extra
from dasv_cli.deploy.metadata import OUTPUT_NAME, ModelInfo
from dasv_cli.errors import InputError, UsageError

DEFAULT_MAX_FRAMES = 4000  # frames per batch, as eval.embed
DEFAULT_MAX_BATCH = 64


class OnnxExtractor:
    """An exported embedding extractor run by onnxruntime on the CPU (or the providers given)."""

    def __init__(self, path: str | Path, threads: int | None = None, providers: Sequence[str] | None = None) -> None:
        from dasv_cli.io.paths import require_file

        ort = import_extra("onnxruntime")
        self.path = require_file(path, "an ONNX model file", "no such ONNX model (make one with `dasv export`)")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), options,
                                                providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as exc:  # noqa: BLE001  onnxruntime raises its own Fail/InvalidProtobuf types
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise InputError(f"{self.path}: not a loadable ONNX model ({first})") from None
        self.info = ModelInfo.from_props(self.session.get_modelmeta().custom_metadata_map, str(self.path))
        self._logmel_cfg: Any = None
        self._make_session = lambda graph: ort.InferenceSession(graph, options, providers=list(
            providers or ["CPUExecutionProvider"]))
        self._split: Any = None  # (front-end session, head session, input, frames), made when first needed
        self._layout: Any = ()
        self._pooling: Any = ()  # (torch pooling, session after it, its input name) or None, when first needed

    # -- what the model is --------------------------------------------------------------------
    @property
    def takes_waveform(self) -> bool:
        return self.info.input == "waveform"

    @property
    def embedding_size(self) -> int:
        return self.info.embedding_size

    @property
    def min_frames(self) -> int:
        return self.info.min_frames

    @property
    def n_mels(self) -> int:
        return self.info.n_mels

    @property
    def norm(self) -> str:
        return self.info.norm

    @property
    def recipe(self) -> Any:
        """The LogMelConfig the model's features follow (and a waveform graph computes)."""
        if self._logmel_cfg is None:
            from dasv_cli.dsp.logmel import LogMelConfig

            self._logmel_cfg = LogMelConfig.from_dict(self.info.recipe)
        return self._logmel_cfg

    # -- one batch ----------------------------------------------------------------------------
    def run(self, batch: np.ndarray) -> np.ndarray:
        """The graph on one batch of its own input kind, float32 [B, E] (no checks: see embed_*)."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run([OUTPUT_NAME], {self.info.input_name: x})[0]

    def embed_features(self, batch: np.ndarray) -> np.ndarray:
        """Raw log-mel [B, T, n_mels] (one length, T >= 1) -> [B, E]; needs a features graph."""
        if self.takes_waveform:
            raise UsageError(f"{self.path} takes waveforms (exported with --waveform), not features")
        x = np.asarray(batch)
        if x.ndim != 3 or x.shape[2] != self.n_mels or x.shape[1] < 1 or x.shape[0] < 1:
            raise InputError(f"{self.path} expects features [batch, frames >= 1, {self.n_mels}], got {list(x.shape)}")
        return self.run(x)

    def embed_waveforms(self, batch: np.ndarray) -> np.ndarray:
        """Waveforms [B, N] (one length, float in [-1, 1), at the recipe's rate) -> [B, E]."""
        x = np.asarray(batch, dtype=np.float32)
        cfg = self.recipe
        if x.ndim != 2 or x.shape[0] < 1:
            raise InputError(f"{self.path} expects waveforms [batch, samples], got {list(x.shape)}")
        if x.shape[1] < cfg.win_length:
            raise InputError(f"too short: {x.shape[1]} samples, less than one {cfg.win_length}-sample analysis window")
        if self.takes_waveform:
            return self.run(x)
        from dasv_cli.dsp.logmel import logmel

        return self.run(np.stack([logmel(w, cfg) for w in x]))

    # -- front-end and head apart, for eval.chunked -----------------------------------------------
    def layout(self) -> tuple[int, int, bool] | None:
        """The front-end's (time_stride, receptive_field, time_global), read off the network it was
        exported from (built on torch's meta device), or None when the graph cannot be cut there."""
        if self._layout == ():
            from dasv_cli.deploy.split import split_sessions
            from dasv_cli.eval.chunked import front_end_layout
            from dasv_cli.model import ModelConfig, SpeakerNet

            import torch

            with torch.device("meta"):
                net = SpeakerNet(ModelConfig.from_dict(self.info.model_config))
            self._layout = front_end_layout(net.front_end)
            if self._layout is not None:
                self._split = split_sessions(self.path, self._make_session)
                self._layout = self._layout if self._split is not None else None
        return self._layout

    def _cut(self) -> tuple[Any, Any, str, str]:
        if self.layout() is None:
            raise InputError(f"{self.path}: its front-end cannot be found in the graph, so it cannot be run a "
                             f"chunk at a time; export it again with this dasv")
        return self._split

    def frames(self, feats: np.ndarray) -> np.ndarray:
        """Normalised log-mel [1, T, n_mels] (T >= min_frames) -> frame vectors [1, T', D]."""
        front, _, name, _ = self._cut()
        return front.run(None, {name: np.ascontiguousarray(feats, dtype=np.float32)})[0]

    def head(self, frames: np.ndarray) -> np.ndarray:
        """Frame vectors [1, T', D] -> embeddings [1, E] (pooling and FC block)."""
        _, head, _, name = self._cut()
        return head.run([OUTPUT_NAME], {name: np.ascontiguousarray(frames, dtype=np.float32)})[0]

    def pooler(self) -> Any:
        """The export's pooling a chunk at a time (model.pooling_stream, with its weights read from
        the graph) and the rest of its head as a session; None where the graph cannot be cut at the
        pooling or its weights do not fit the network's (its head then pools the whole sequence)."""
        if self._pooling == ():
            self._pooling = _pooling_of(self)
        if self._pooling is None:
            return None
        from dasv_cli.model.pooling_stream import stream_of

        pooling, session, name = self._pooling
        stream = stream_of(pooling)
        return None if stream is None else OnnxPooler(stream, session, name)

    # -- many utterances ----------------------------------------------------------------------
    def embed(self, items: Sequence[np.ndarray], max_frames: int = DEFAULT_MAX_FRAMES,
              max_batch: int = DEFAULT_MAX_BATCH) -> np.ndarray:
        """float32 [len(items), E] for utterances of any lengths: raw features [T, n_mels] each, or
        1-D waveforms; equal lengths are batched together within the frame budget, order kept."""
        out = np.zeros((len(items), self.embedding_size), dtype=np.float32)
        if not items:
            return out
        wave = np.asarray(items[0]).ndim == 1
        hop = self.recipe.hop_length if wave else 1
        lengths = np.array([np.asarray(x).shape[0] for x in items], dtype=np.int64)
        order = np.argsort(-lengths, kind="stable")
        start = 0
        while start < order.size:
            stop = start
            while stop < order.size and lengths[order[stop]] == lengths[order[start]]:
                stop += 1
            per = int(max(1, min(max_batch, max_frames // max(int(lengths[order[start]]) // hop, 1))))
            for s in range(start, stop, per):
                idx = order[s:min(s + per, stop)]
                batch = np.stack([np.asarray(items[i], dtype=np.float32) for i in idx])
                out[idx] = self.embed_waveforms(batch) if wave else self.embed_features(batch)
            start = stop
        return out


class OnnxPooler:
    """A streamed pooling (torch, on the CPU) feeding the export's layers after its pooling."""

    def __init__(self, stream: Any, session: Any, name: str) -> None:
        self.stream, self.session, self.name = stream, session, name

    def update(self, frames: np.ndarray) -> None:
        import torch

        with torch.inference_mode():
            self.stream.update(torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32)))

    def embedding(self) -> np.ndarray:
        import torch

        with torch.inference_mode():
            pooled = self.stream.result().float().numpy()
        return self.session.run([OUTPUT_NAME], {self.name: pooled})[0]


def _pooling_of(extractor: OnnxExtractor) -> tuple[Any, Any, str] | None:
    """(the network's pooling in eval mode with the export's weights, each known by its shape, the session
    after it, its input)."""
    if extractor.layout() is None:
        return None
    from dasv_cli.deploy.split import pooling_cut
    from dasv_cli.model import ModelConfig, SpeakerNet

    import torch

    cut = pooling_cut(extractor.path, extractor._make_session)
    if cut is None:
        return None
    weights, session, name = cut
    with torch.device("meta"):
        pooling = SpeakerNet(ModelConfig.from_dict(extractor.info.model_config)).pooling
    pooling = pooling.to_empty(device="cpu").eval()
    params = list(pooling.parameters())
    by_shape = {tuple(w.shape): w for w in weights}
    if len(by_shape) != len(weights) or sorted(by_shape) != sorted(tuple(p.shape) for p in params):
        return None  # weights that cannot be told apart by their shapes, or other ones: pool whole
    with torch.no_grad():
        for p in params:
            p.copy_(torch.from_numpy(np.array(by_shape[tuple(p.shape)], dtype=np.float32)))
    return pooling, session, name
