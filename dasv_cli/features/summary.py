"""What `dasv inspect` reports about a feature store: its contents and the inputs that failed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dasv_cli.augment.keys import KINDS, parse_key
from dasv_cli.features.failed import failed_counts
from dasv_cli.io.store.layout import shard_part
from dasv_cli.io.store.reader import FeatureStore

VOXCELEB2_HOURS = 2300  # VoxCeleb2 dev: the scale the storage figures are projected to
OFFLINE_COPIES = 5  # the Kaldi recipe's reverb, noise, music, babble (+ speed) copies per utterance


def storage_per_hour(recipe: dict[str, Any], dtype: str, store_bytes: int, hours: float) -> dict[str, Any]:
    """What an hour of speech costs on disk (bytes): its 16-bit PCM (online augmentation's input),
    its features in the store's dtype, each offline copy (`--augment`: a copy is features too),
    and this store as it is; then the same for VoxCeleb2's 2,300 h."""
    rate = float(recipe.get("sample_rate", 16000))
    frames = rate / float(recipe.get("hop_length", 160)) * 3600
    per_value = {"float16": 2, "float32": 4}
    feats = {dt: frames * int(recipe.get("n_mels", 80)) * size for dt, size in per_value.items()}
    pcm = rate * 2 * 3600
    dtype = dtype if dtype in feats else "float32"
    return {
        "pcm": pcm, "features": feats[dtype], "offline_copy": feats[dtype],
        "this_store": store_bytes / hours if hours > 0 else 0.0,
        "voxceleb2_hours": VOXCELEB2_HOURS,
        "voxceleb2": {"pcm": pcm * VOXCELEB2_HOURS, "features": feats[dtype] * VOXCELEB2_HOURS,
                      "offline_copies": OFFLINE_COPIES, "copies_float16": OFFLINE_COPIES * feats["float16"] * VOXCELEB2_HOURS,
                      "copies": OFFLINE_COPIES * feats[dtype] * VOXCELEB2_HOURS},
    }


def summarise_store(directory: str | Path) -> dict[str, Any]:
    """Utterances, frames, hours, shards, bytes, dtype, recipe; `parts` (the `--part` splits whose
    shards it holds, e.g. ["1/8", ..., "8/8"]); `failed` (inputs in all failed lists) and
    `failed_lists` ({file: inputs}, the run's failed.tsv and each part's); `clean` and `augmented`
    (utterances and augmented copies, KEY#KIND), `augmented_kinds` ({kind: copies}) and `augment`
    (the distinct provenance attrs of the shards written with --augment); `content` (features,
    features+audio, audio) and `storage_per_hour` (storage_per_hour)."""
    with FeatureStore(directory) as store:
        info = store.summary()
        info["content"] = store.index.content
        parts = {shard_part(p) for p in store.shards}
        kinds: dict[str, int] = {}
        for key in store.keys():
            parsed = parse_key(key)
            if parsed is not None:
                kinds[parsed.kind] = kinds.get(parsed.kind, 0) + 1
    info["augmented"] = sum(kinds.values())
    info["clean"] = info["utterances"] - info["augmented"]
    info["augmented_kinds"] = {k: kinds[k] for k in KINDS if k in kinds}
    specs: list = []
    if kinds:  # here, not at the top: the augmentation machinery is ~0.2 s of a clean store's inspect
        from dasv_cli.features.augmented import stored_provenance

        specs = list(stored_provenance(Path(directory)).values())
    info["augment"] = [x for i, x in enumerate(specs) if x not in specs[:i]]
    info["parts"] = [str(p) for p in sorted((p for p in parts if p is not None), key=lambda p: (p.count, p.index))]
    info["storage_per_hour"] = storage_per_hour(info["recipe"], info["dtype"], info["bytes"], info["hours"])
    counts = failed_counts(Path(directory))
    info["failed"] = sum(n for _, n in counts)
    info["failed_lists"] = {str(path): n for path, n in counts}
    return info


def verify_store(directory: str | Path) -> tuple[dict[str, Any], list[Any]]:
    """`dasv inspect --verify`: every shard read whole against its checksum (io.store.integrity).
    ({"shards", "ok", "damaged": ["name: what"], "no_checksum": [name]}, the damaged shards' Verdicts)."""
    from dasv_cli import progress
    from dasv_cli.errors import InputError
    from dasv_cli.io.store.integrity import DAMAGED, NO_CHECKSUM, OK, verify_shards
    from dasv_cli.io.store.layout import list_shards

    shards = list_shards(directory)
    if not shards:
        raise InputError(f"{directory}: no feature shards to verify (is this a `dasv features` output directory?)")
    verdicts = verify_shards(shards, progress=not progress.is_quiet())
    damaged = [v for v in verdicts if v.status == DAMAGED]
    return {"shards": len(verdicts), "ok": sum(v.status == OK for v in verdicts),
            "damaged": [f"{v.path.name}: {v.detail}" for v in damaged],
            "no_checksum": [v.path.name for v in verdicts if v.status == NO_CHECKSUM]}, damaged
