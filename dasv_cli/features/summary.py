"""What `dasv inspect` reports about a feature store: its contents and the inputs that failed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dasv_cli.features.failed import count_failed
from dasv_cli.io.store.layout import FAILED_NAME
from dasv_cli.io.store.reader import FeatureStore


def summarise_store(directory: str | Path) -> dict[str, Any]:
    """Utterances, frames, hours, shards, bytes, dtype, recipe, and `failed` / `failed_list` (failed.tsv)."""
    with FeatureStore(directory) as store:
        info = store.summary()
    failed = count_failed(Path(directory))
    info["failed"] = failed
    info["failed_list"] = str(Path(directory) / FAILED_NAME) if failed else None
    return info
