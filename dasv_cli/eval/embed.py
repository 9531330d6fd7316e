"""Embedding extraction: one embedding per whole utterance, each computed once.

Utterances are grouped by exact length and only equal-length utterances share a batch, so nothing
is padded or cropped and an utterance's embedding never depends on its batch mates (the network is in
eval mode: BatchNorm uses its running statistics, no head is dropped). Features are normalised per
utterance with the stored whole-utterance statistics, as the checkpoint's config["features"]["norm"]
says ("cmn" by default).

An utterance shorter than the network's minimum input (16 frames = 160 ms for VGG4L) is repeated in
time until it reaches the minimum; a warning names such utterances.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from dasv_cli.devices import resolve_device
from dasv_cli.errors import DasvError, InputError
from dasv_cli.eval.chunked import DEFAULT_CHUNK_FRAMES, fit_min_frames
from dasv_cli.eval.trials import describe_missing

if TYPE_CHECKING:  # pragma: no cover
    from dasv_cli.io.embeddings import Embeddings
    from dasv_cli.io.lists import Trials

# Frames per batch (sum over the batch). VGG4L with K=1024 keeps ~50 KB of activations per frame in
# its first block, so 4,000 frames (40 s of speech) stay near 200 MB on a CPU.
DEFAULT_MAX_FRAMES = 4000
DEFAULT_MAX_BATCH = 64


def load_any_checkpoint(path: str | Path) -> dict[str, Any]:
    """A dasv checkpoint dict from a dasv `.pt` or an original research-tool `.chkpt`."""
    from dasv_cli.io.checkpoint import load_checkpoint
    from dasv_cli.io.original import convert_original, is_original_checkpoint

    path = Path(path)
    if path.is_file() and is_original_checkpoint(path):
        return convert_original(path)
    try:
        return load_checkpoint(path)
    except DasvError:
        raise
    except Exception as exc:  # noqa: BLE001
        # torch's safe unpickler fails on arbitrary bytes with assorted errors (KeyError, struct.error, ...).
        raise InputError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc)[:100]})") from None


def load_extractor(path: str | Path, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """(SpeakerNet in eval mode on `device`, checkpoint dict); accepts dasv .pt and original .chkpt."""
    from dasv_cli.model import ModelConfig, SpeakerNet

    path = Path(path)
    ckpt = load_any_checkpoint(path)
    config = ckpt.get("config") or {}
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise InputError(f"{path}: checkpoint config has no 'model' section")
    try:
        cfg = ModelConfig.from_dict(config["model"])
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: unusable model config ({exc})") from None
    model = SpeakerNet(cfg)
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError, TypeError) as exc:
        from dasv_cli.io.checkpoint import state_dict_mismatch

        raise InputError(f"{path}: the weights do not fit the network in its config "
                         f"({state_dict_mismatch(exc)})") from None
    model.eval()
    model.to(device)
    return model, ckpt


def open_onnx_extractor(path: str | Path) -> tuple[Any, dict[str, Any], str]:
    """(OnnxExtractor, a checkpoint-like dict naming its recipe and step, "none"): the graph normalises
    raw log-mel itself, so the features it is given are not normalised here (norm "none")."""
    from dasv_cli.deploy.runtime import OnnxExtractor

    runtime = OnnxExtractor(path)
    ckpt = {"step": int(runtime.info.checkpoint.get("step") or 0), "source_sha256": runtime.info.checkpoint.get("sha256"),
            "config": {"model": {}, "features": {"norm": runtime.norm, "recipe": dict(runtime.info.recipe)}}}
    return runtime, ckpt, "none"


def checkpoint_norm(ckpt: dict[str, Any]) -> str:
    """The feature normalisation the model was trained with ("cmn" when the checkpoint does not say)."""
    features = (ckpt.get("config") or {}).get("features") or {}
    norm = features.get("norm") or "cmn"
    if norm not in ("cmn", "cmvn", "none"):
        raise InputError(f"checkpoint names an unknown feature normalisation {norm!r}")
    return norm


def checkpoint_recipe(ckpt: dict[str, Any]) -> dict[str, Any] | None:
    features = (ckpt.get("config") or {}).get("features") or {}
    recipe = features.get("recipe")
    return dict(recipe) if isinstance(recipe, dict) else None


def _forward(model: Any, batch: np.ndarray, device: str) -> np.ndarray:
    """Embeddings of one batch, always in eval mode (BatchNorm running stats, no head dropping), so
    the result never depends on the batch mates; the model's previous mode is restored. An exported
    model (deploy.runtime.OnnxExtractor, see open_onnx_extractor) runs its own graph."""
    if hasattr(model, "embed_features"):
        return model.embed_features(batch)
    import torch

    was_training = bool(model.training)
    autotune = torch.backends.cudnn.benchmark
    if was_training:
        model.eval()
    # Whole utterances come in hundreds of lengths: with cuDNN autotuning on (training sets it for
    # its fixed windows) every new length would first time each convolution's algorithms, which
    # costs more than the batch itself. Off while embedding, as it was found afterwards.
    torch.backends.cudnn.benchmark = False
    try:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device)
            return model(x).float().cpu().numpy()
    finally:
        torch.backends.cudnn.benchmark = autotune
        if was_training:
            model.train()


def length_batches(lengths: Sequence[int], max_frames: int = DEFAULT_MAX_FRAMES,
                   max_batch: int = DEFAULT_MAX_BATCH) -> list[np.ndarray]:
    """Indices grouped into batches of equal length (longest first), each within the frame budget."""
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < order.size:
        length = lengths[order[start]]
        stop = start
        while stop < order.size and lengths[order[stop]] == length:
            stop += 1
        per = int(max(1, min(max_batch, max_frames // max(int(length), 1))))
        for s in range(start, stop, per):
            batches.append(order[s:min(s + per, stop)])
        start = stop
    return batches


@dataclass
class Reporter:
    total: int
    enabled: bool
    description: str
    _progress: Any = field(default=None, init=False)
    _task: Any = field(default=None, init=False)

    def __enter__(self) -> "Reporter":
        if self.enabled:
            from dasv_cli.progress import make_progress

            self._progress = make_progress()
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=self.total)
        return self

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


def iter_store_embeddings(model: Any, store: Any, keys: Sequence[str], norm: str = "cmn", device: str = "cpu",
                          progress: bool = True, max_frames: int = DEFAULT_MAX_FRAMES,
                          max_batch: int = DEFAULT_MAX_BATCH, check: Callable[[], None] | None = None,
                          chunk: int = DEFAULT_CHUNK_FRAMES) -> Iterator[tuple[list[str], np.ndarray]]:
    """Yields (keys, embeddings float32 [b, E]) batch by batch, so a caller can keep what is done.
    An utterance longer than `chunk` frames is embedded alone, through eval.chunked.

    `check` is called before each batch (e.g. InterruptFlag.check: a Ctrl-C stops there)."""
    from dasv_cli.dsp.logmel import normalise
    from dasv_cli.progress import warn

    model = getattr(model, "module", model)  # DistributedDataParallel / DataParallel wrappers
    keys = list(keys)
    if not keys:
        return
    absent = [k for k in keys if k not in store]
    if absent:
        shown = ", ".join(absent[:10]) + (f", ... ({len(absent) - 10} more)" if len(absent) > 10 else "")
        raise InputError(f"{len(absent)} of {len(keys)} keys are not in the feature store {store.path}: {shown}")
    lengths = [store.length(k) for k in keys]
    min_frames = int(model.min_frames)
    short = [k for k, n in zip(keys, lengths) if n < min_frames]
    if short:
        shown = ", ".join(short[:5]) + (", ..." if len(short) > 5 else "")
        warn(f"{len(short)} utterance(s) shorter than {min_frames} frames are repeated to reach it: {shown}")
    with Reporter(len(keys), progress, "embedding") as rep:
        for i in [i for i, n in enumerate(lengths) if n > chunk]:
            if check is not None:
                check()
            yield [keys[i]], _embed_long(model, store, keys[i], norm, device, chunk)[None]
            rep.advance(1)
        fits = np.array([i for i, n in enumerate(lengths) if n <= chunk], dtype=np.int64)
        for batch in (fits[b] for b in length_batches([lengths[i] for i in fits], max_frames, max_batch)):
            if check is not None:
                check()
            feats = []
            for i in batch:
                key = keys[i]
                f = store[key]
                mean, std = store.stats(key)
                f = normalise(f, mean, std, norm)
                feats.append(fit_min_frames(np.asarray(f, dtype=np.float32), min_frames))
            vectors = _forward(model, np.stack(feats), device)
            rep.advance(len(batch))
            yield [keys[i] for i in batch], vectors


def _embed_long(model: Any, store: Any, key: str, norm: str, device: str, chunk: int) -> np.ndarray:
    """One long stored utterance's embedding [E], its front-end run `chunk` frames at a time."""
    from dasv_cli.eval.chunked import Features, embed_features, parts_of

    parts, norm = parts_of(model, device, norm)
    feats = Features.of_array(store[key], norm, chunk, stats=store.stats(key))
    return embed_features(parts, feats, chunk, key)


def embed_store(model: Any, store: Any, keys: Sequence[str], norm: str = "cmn", device: str = "cpu",
                progress: bool = True, max_frames: int = DEFAULT_MAX_FRAMES,
                max_batch: int = DEFAULT_MAX_BATCH, check: Callable[[], None] | None = None,
                chunk: int = DEFAULT_CHUNK_FRAMES) -> np.ndarray:
    """float32 [len(keys), E]: the embedding of each whole utterance, rows in the order of `keys`
    (`check` before each batch, as for iter_store_embeddings)."""
    model = getattr(model, "module", model)
    keys = list(keys)
    out = np.zeros((len(keys), int(model.embedding_size)), dtype=np.float32)
    row = {k: i for i, k in enumerate(keys)}
    for done, vectors in iter_store_embeddings(model, store, keys, norm, device, progress, max_frames, max_batch,
                                               check, chunk):
        out[[row[k] for k in done]] = vectors
    return out


@dataclass
class AudioFailure:
    path: str
    reason: str


def logmel_config(recipe: dict[str, Any] | None):
    from dasv_cli.dsp.logmel import LogMelConfig

    if not recipe:
        return LogMelConfig()
    known = {f for f in LogMelConfig.__dataclass_fields__}
    try:
        return LogMelConfig.from_dict({k: v for k, v in recipe.items() if k in known})
    except (TypeError, ValueError) as exc:
        raise InputError(f"the checkpoint's feature recipe is not usable here ({exc})") from None


def check_store_fits(store: Any, model: Any, ckpt: dict[str, Any], ckpt_name: str) -> None:
    """Refuse features the network cannot take or was not trained on (another feature recipe)."""
    from dasv_cli.io.store.layout import check_recipe

    n_mels = int(getattr(getattr(model, "cfg", model), "n_mels", store.n_mels))
    if store.n_mels != n_mels:
        raise InputError(f"{store.path}: features have {store.n_mels} mel bands but {ckpt_name} expects {n_mels}")
    check_recipe(store.path, store.recipe, checkpoint_recipe(ckpt), f"{ckpt_name} was trained on")


def embed_trials_table(model_path: str | Path, features_dir: str | Path, trials: "Trials", device: str = "auto",
                       skip_missing: bool = False, progress: bool = True,
                       model_and_ckpt: tuple[Any, dict[str, Any]] | None = None,
                       check: Callable[[], None] | None = None) -> "Embeddings":
    """Embed each unique utterance of `trials` once from a feature store (for score/validate;
    `check` before each batch).

    Keys absent from the store are an error listing them, or left out with `skip_missing`.
    """
    from dasv_cli.io.embeddings import Embeddings
    from dasv_cli.io.store.reader import FeatureStore

    dev = resolve_device(device)
    model, ckpt = model_and_ckpt if model_and_ckpt is not None else load_extractor(model_path, dev)
    store = FeatureStore(features_dir)
    try:
        check_store_fits(store, model, ckpt, str(model_path))
        keys = trials.unique_keys()
        present = [k for k in keys if k in store]
        if len(present) != len(keys) and not skip_missing:
            missing = [k for k in keys if k not in store]
            raise InputError(describe_missing(missing, len(keys), f"the feature store {features_dir}", trials=trials)
                             + " (--skip-missing scores the rest)")
        norm = checkpoint_norm(ckpt)
        vectors = embed_store(model, store, present, norm=norm, device=dev, progress=progress, check=check)
    finally:
        store.close()
    return Embeddings(present, vectors, {"checkpoint": str(model_path), "norm": norm})

