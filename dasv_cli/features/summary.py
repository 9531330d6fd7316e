"""What `dasv inspect` reports about a feature store: its contents and the inputs that failed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dasv_cli.augment.keys import KINDS, parse_key
from dasv_cli.features.failed import failed_counts
from dasv_cli.io.store.layout import shard_part
from dasv_cli.io.store.reader import FeatureStore


def summarise_store(directory: str | Path) -> dict[str, Any]:
    """Utterances, frames, hours, shards, bytes, dtype, recipe; `parts` (the `--part` splits whose
    shards it holds, e.g. ["1/8", ..., "8/8"]); `failed` (inputs in all failed lists) and
    `failed_lists` ({file: inputs}, the run's failed.tsv and each part's); `clean` and `augmented`
    (utterances and augmented copies, KEY#KIND), `augmented_kinds` ({kind: copies}) and `augment`
    (the distinct provenance attrs of the shards written with --augment)."""
    with FeatureStore(directory) as store:
        info = store.summary()
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
    counts = failed_counts(Path(directory))
    info["failed"] = sum(n for _, n in counts)
    info["failed_lists"] = {str(path): n for path, n in counts}
    return info
