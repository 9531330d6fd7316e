"""`dasv embed`: one embedding per utterance from a checkpoint, into an embedding table or stdout."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

EPILOG = """\
[bold]Examples[/bold]

  dasv embed --model best.pt --features feats/ -o embeddings.h5

  dasv embed --model best.pt --audio wavs.lst --audio-dir /data/wav -o - | head -2

  dasv embed --model original.chkpt --features feats/ --keys enrol.lst -o enrol.npy

Re-running with an existing .h5 table computes only the keys it does not hold yet.
"""


def register(app: typer.Typer) -> None:
    app.command("embed", epilog=EPILOG)(embed)


def embed(
    model: Path = typer.Option(..., "--model", "-m", metavar="CKPT",
                               help="dasv checkpoint (.pt) or original research-tool .chkpt."),
    features: Optional[Path] = typer.Option(None, "--features", "-f", metavar="DIR",
                                            help="Feature store from `dasv features`."),
    audio: Optional[str] = typer.Option(None, "--audio", "-a", metavar="LIST|-",
                                        help="Audio list instead of a store: featurised on the fly with the model's recipe."),
    audio_dir: Optional[Path] = typer.Option(None, "--audio-dir", metavar="DIR",
                                             help="Prefix for relative paths in --audio."),
    keys: Optional[str] = typer.Option(None, "--keys", "-k", metavar="LIST",
                                       help="Embed only these keys (one per line)."),
    output: str = typer.Option("embeddings.h5", "--output", "-o", metavar="FILE|-",
                               help="HDF5 table (.h5), text (.txt or '-' for stdout: 'key v1 v2 ...') or .npy (+ .keys.txt)."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto (cuda when present)."),
    max_frames: int = typer.Option(4000, "--max-frames", min=1,
                                   help="Frames per batch (utterances of equal length share a batch)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Embed every utterance once (whole utterance, batched by equal length, on GPU when present).

    Features are normalised per utterance as the checkpoint was trained (CMN by default). With an
    existing HDF5 table from the same checkpoint, only missing keys are computed; an interrupted run
    keeps what it finished.
    """
    from dasv_cli import progress
    from dasv_cli.errors import EXIT_PARTIAL, InputError, UsageError
    from dasv_cli.eval import embed as engine
    from dasv_cli.io import embeddings as tables
    from dasv_cli.io.lists import read_audio_list, read_key_list

    progress.set_quiet(quiet)
    if (features is None) == (audio is None):
        raise UsageError("give exactly one of --features DIR or --audio LIST")
    if audio_dir is not None and audio is None:
        raise UsageError("--audio-dir goes with --audio")
    if audio == "-" and keys == "-":
        raise UsageError("--audio and --keys cannot both read stdin")
    kind = _output_kind(output)
    if kind != "stdout":
        from dasv_cli.io.atomic import check_writable

        check_writable(output, "embeddings")
    dev = engine.resolve_device(device)
    wanted = read_key_list(keys) if keys is not None else None

    net, ckpt = engine.load_extractor(model, dev)
    norm = engine.checkpoint_norm(ckpt)
    attrs = engine.table_attrs(model, ckpt, norm, str(features if features is not None else audio))

    existing = tables.empty(int(net.embedding_size), attrs)
    if kind == "h5" and Path(output).exists():
        existing = tables.read_embeddings(output)
        old = existing.attrs.get("checkpoint_sha256")
        if old and old != attrs["checkpoint_sha256"]:
            raise InputError(
                f"{output}: holds embeddings from another checkpoint ({existing.attrs.get('checkpoint', '?')}); "
                f"choose another -o or remove it"
            )
        if len(existing) and existing.dim != int(net.embedding_size):
            raise InputError(f"{output}: holds {existing.dim}-dimensional embeddings, the model gives {net.embedding_size}")

    failures: list = []
    store = None
    if features is not None:
        from dasv_cli.io.store.reader import FeatureStore

        store = FeatureStore(features)
        engine.check_store_fits(store, net, ckpt, str(model))
        all_keys = store.keys()
        if wanted is not None:
            absent = [k for k in wanted if k not in store]
            if absent:
                shown = ", ".join(absent[:10]) + (f", ... ({len(absent) - 10} more)" if len(absent) > 10 else "")
                raise InputError(f"{keys}: {len(absent)} key(s) are not in the feature store {features}: {shown}")
            all_keys = wanted
        todo = existing.missing(all_keys)
        batches = engine.iter_store_embeddings(net, store, todo, norm=norm, device=dev, progress=not quiet,
                                               max_frames=max_frames)
    else:
        entries = read_audio_list(audio, audio_dir)
        if wanted is not None:
            listed = {e.key for e in entries}
            absent = [k for k in wanted if k not in listed]
            if absent:
                shown = ", ".join(absent[:10]) + (", ..." if len(absent) > 10 else "")
                raise InputError(f"{keys}: {len(absent)} key(s) are not in the audio list {audio}: {shown}")
            keep = set(wanted)
            entries = [e for e in entries if e.key in keep]
        all_keys = [e.key for e in entries]
        todo_set = set(existing.missing(all_keys))
        entries = [e for e in entries if e.key in todo_set]
        batches = engine.iter_audio_embeddings(net, entries, engine.checkpoint_recipe(ckpt), norm=norm, device=dev,
                                               progress=not quiet, failures=failures, max_frames=max_frames)

    if len(existing) and kind == "h5":
        progress.log(f"{output}: {len(existing)} embeddings already there; computing "
                     f"{len(all_keys) - sum(1 for k in all_keys if k in existing)} missing")
    done_keys: list[str] = []
    done_vectors: list = []
    finished = False
    try:
        for batch_keys, vectors in batches:
            done_keys.extend(batch_keys)
            done_vectors.append(vectors)
        finished = True
    finally:
        if store is not None:
            store.close()
        import numpy as np

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
                    progress.warn(f"interrupted: {len(done_keys)} new embeddings saved to {output}; "
                                  f"run the same command again to finish")
        elif finished:
            table = existing.merged(done_keys, new)
            order = [k for k in all_keys if k in table]
            rows = [table.index[k] for k in order]
            if kind == "stdout":
                tables.write_text(None, order, table.vectors[rows])
            elif kind == "txt":
                _write_text_file(Path(output), order, table.vectors[rows])
            else:
                tables.export_npy(tables.Embeddings(order, table.vectors[rows], attrs), output)

    for f in failures:
        progress.warn(f"{f.path}: {f.reason}")
    where = "stdout" if kind == "stdout" else output
    progress.log(f"embedded {len(done_keys)} utterance(s) with {model} ({norm}) -> {where}")
    if failures:
        progress.warn(f"{len(failures)} audio file(s) could not be used (listed above); the rest are embedded")
        raise typer.Exit(EXIT_PARTIAL)


def _output_kind(output: str) -> str:
    if output == "-":
        return "stdout"
    suffix = Path(output).suffix.lower()
    if suffix == ".txt":
        return "txt"
    if suffix == ".npy":
        return "npy"
    return "h5"


def _write_text_file(path: Path, keys, vectors) -> None:
    from dasv_cli.io.atomic import write_text_atomic
    from dasv_cli.io.embeddings import format_text_lines

    write_text_atomic(path, "embeddings", lambda fh: fh.write(format_text_lines(keys, vectors)))
