"""`dasv embed` as one engine call: pick the keys, reuse an existing table, embed the rest, write the output.

The output is an HDF5 table (grown in place on a rerun: only keys it does not hold are computed), a
text table (`.txt`, or `-` for stdout), or `.npy` with the keys beside it. An interrupted run (Ctrl-C)
keeps what it finished in an HDF5 table, so running the same command again completes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from dasv_cli.devices import resolve_device
from dasv_cli.errors import EXIT_PARTIAL, InputError
from dasv_cli.eval import embed as embedding
from dasv_cli.eval.audio_embed import chunk_of, iter_audio_embeddings
from dasv_cli.eval.chunked import DEFAULT_CHUNK_SECONDS
from dasv_cli.interrupts import InterruptFlag
from dasv_cli.io import embeddings as tables
from dasv_cli.io.atomic import check_writable
from dasv_cli.io.lists import read_audio_list, read_key_list
from dasv_cli.progress import log, warn

Batches = Iterator[tuple[list[str], np.ndarray]]


@dataclass
class EmbedRun:
    """What one `dasv embed` run did: how many embeddings it computed, where they went, what failed."""

    embedded: int
    where: str  # the output file, or "stdout"
    norm: str
    failures: list[embedding.AudioFailure] = field(default_factory=list)
    speech: dict[str, float] = field(default_factory=dict)  # with --vad: each file's share of speech

    @property
    def exit_code(self) -> int:
        """3 when some audio files could not be used (the rest is embedded), else 0."""
        return EXIT_PARTIAL if self.failures else 0


def output_kind(output: str) -> str:
    """"stdout" for `-`, "txt" or "npy" by suffix, else "h5" (the embedding table)."""
    if output == "-":
        return "stdout"
    suffix = Path(output).suffix.lower()
    if suffix == ".txt":
        return "txt"
    if suffix == ".npy":
        return "npy"
    return "h5"


def table_attrs(ckpt_path: str | Path, ckpt: dict[str, Any], norm: str, source: str) -> dict[str, Any]:
    """Attributes that name where an embedding table came from."""
    return {
        **tables.model_identity(ckpt_path),
        "checkpoint_step": int(ckpt.get("step") or 0),
        "model_config": json.dumps((ckpt.get("config") or {}).get("model") or {}, sort_keys=True),
        "norm": norm,
        "source": source,
    }


def _existing_table(output: str, kind: str, attrs: dict[str, Any], dim: int) -> tables.Embeddings:
    """The table already at `output` (an HDF5 table from the same checkpoint), else an empty one."""
    if kind != "h5" or not Path(output).exists():
        return tables.empty(dim, attrs)
    existing = tables.read_embeddings(output)
    old = existing.attrs.get("checkpoint_sha256")
    if old and old != attrs["checkpoint_sha256"]:
        raise InputError(
            f"{output}: holds embeddings from another checkpoint ({existing.attrs.get('checkpoint', '?')}); "
            f"choose another -o or remove it"
        )
    if len(existing) and existing.dim != dim:
        raise InputError(f"{output}: holds {existing.dim}-dimensional embeddings, the model gives {dim}")
    return existing


def _listed(wanted: list[str] | None, available: Any, what: str, keys: str | None, short: bool) -> None:
    """Every key of --keys must be in the store or audio list."""
    absent = [k for k in wanted or () if k not in available]
    if absent:
        more = ", ..." if short else f", ... ({len(absent) - 10} more)"
        shown = ", ".join(absent[:10]) + (more if len(absent) > 10 else "")
        raise InputError(f"{keys}: {len(absent)} key(s) are not in {what}: {shown}")


def _save(output: str, kind: str, existing: tables.Embeddings, attrs: dict[str, Any], all_keys: list[str],
          done_keys: list[str], done_vectors: list[np.ndarray], finished: bool) -> list[str]:
    """Write what was computed (all of it, or after an interrupt what an HDF5 table can keep);
    returns the new keys in listed order."""
    new = np.concatenate(done_vectors) if done_vectors else np.zeros((0, existing.dim), dtype=np.float32)
    # Rows in the order the keys were listed (batches finish in length order).
    position = {k: i for i, k in enumerate(all_keys)}
    order = sorted(range(len(done_keys)), key=lambda i: position[done_keys[i]])
    done_keys = [done_keys[i] for i in order]
    new = new[order]
    if kind == "h5":
        if done_keys or not Path(output).exists():
            table = existing.merged(done_keys, new)
            table.attrs.update(attrs)
            tables.write_embeddings(output, table)
            if not finished:
                warn(f"interrupted: {len(done_keys)} new embeddings saved to {output}; "
                     f"run the same command again to finish")
    elif finished:
        table = existing.merged(done_keys, new)
        listed = [k for k in all_keys if k in table]
        rows = table.vectors[[table.index[k] for k in listed]]
        if kind == "stdout":
            tables.write_text(None, listed, rows)
        elif kind == "txt":
            tables.write_text_file(output, listed, rows)
        else:
            tables.export_npy(tables.Embeddings(listed, rows, attrs), output)
    return done_keys


def run_embed(model: Path, *, features: Path | None = None, audio: str | None = None,
              audio_dir: Path | None = None, keys: str | None = None, output: str = "embeddings.h5",
              device: str = "auto", max_frames: int = embedding.DEFAULT_MAX_FRAMES,
              progress: bool = True, chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
              vad: bool = False) -> EmbedRun:
    """Embed the utterances of a feature store (`features`) or an audio list (`audio`, featurised on
    the fly with the checkpoint's recipe), or only `keys` of them, into `output`.

    A Ctrl-C from the model's loading on stops at the next batch (a second one at once); either way an
    HDF5 table keeps the batches finished, and KeyboardInterrupt is raised."""
    kind = output_kind(output)
    if kind != "stdout":
        check_writable(output, "embeddings")
    dev = resolve_device(device)
    wanted = read_key_list(keys) if keys is not None else None
    with InterruptFlag() as interrupt:
        return _run(model, features, audio, audio_dir, keys, wanted, output, kind, dev, max_frames, progress,
                    interrupt, chunk_seconds, vad)


def _run(model: Path, features: Path | None, audio: str | None, audio_dir: Path | None, keys: str | None,
         wanted: list[str] | None, output: str, kind: str, dev: str, max_frames: int, progress: bool,
         interrupt: InterruptFlag, chunk_seconds: float, vad: bool) -> EmbedRun:
    if Path(model).suffix.lower() == ".onnx":
        net, ckpt, feed_norm = embedding.open_onnx_extractor(model)
    else:
        net, ckpt = embedding.load_extractor(model, dev)
        feed_norm = embedding.checkpoint_norm(ckpt)
    interrupt.check()
    norm = embedding.checkpoint_norm(ckpt)  # what the model applies (an ONNX graph: inside it)
    attrs = table_attrs(model, ckpt, norm, str(features if features is not None else audio))
    existing = _existing_table(output, kind, attrs, int(net.embedding_size))

    failures: list[embedding.AudioFailure] = []
    speech: dict[str, float] = {}
    store = None
    if features is not None:
        from dasv_cli.io.store.reader import FeatureStore

        store = FeatureStore(features)
        try:
            embedding.check_store_fits(store, net, ckpt, str(model))
            _listed(wanted, store, f"the feature store {features}", keys, short=False)
        except BaseException:
            store.close()
            raise
        all_keys = wanted if wanted is not None else store.keys()
        batches: Batches = embedding.iter_store_embeddings(net, store, existing.missing(all_keys), norm=feed_norm,
                                                           device=dev, progress=progress, max_frames=max_frames,
                                                           check=interrupt.check, chunk=chunk_of(
                                                               chunk_seconds, embedding.checkpoint_recipe(ckpt)))
    else:
        entries = read_audio_list(audio, audio_dir)
        if wanted is not None:
            _listed(wanted, {e.key for e in entries}, f"the audio list {audio}", keys, short=True)
            keep = set(wanted)
            entries = [e for e in entries if e.key in keep]
        all_keys = [e.key for e in entries]
        todo = set(existing.missing(all_keys))
        batches = iter_audio_embeddings(net, [e for e in entries if e.key in todo],
                                                  embedding.checkpoint_recipe(ckpt), norm=feed_norm, device=dev,
                                                  progress=progress, failures=failures,
                                                  chunk_seconds=chunk_seconds, vad=vad, speech=speech,
                                                  check=interrupt.check)

    if len(existing) and kind == "h5":
        log(f"{output}: {len(existing)} embeddings already there; computing "
            f"{len(all_keys) - sum(1 for k in all_keys if k in existing)} missing")
    done_keys: list[str] = []
    done_vectors: list[np.ndarray] = []
    finished = False
    try:
        for batch_keys, vectors in batches:
            done_keys.extend(batch_keys)
            done_vectors.append(vectors)
            interrupt.check()
        finished = True
    finally:
        if store is not None:
            store.close()
        done_keys = _save(output, kind, existing, attrs, all_keys, done_keys, done_vectors, finished)

    for f in failures:
        warn(f"{f.path}: {f.reason}")
    where = "stdout" if kind == "stdout" else output
    log(f"embedded {len(done_keys)} utterance(s) with {model} ({norm}) -> {where}")
    if failures:
        warn(f"{len(failures)} audio file(s) could not be used (listed above); the rest are embedded")
    return EmbedRun(embedded=len(done_keys), where=where, norm=norm, failures=failures, speech=speech)
