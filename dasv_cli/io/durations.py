"""Utterance durations in seconds, for quality-aware calibration: from a Kaldi-style `utt2dur` file
(`key seconds` per line) or from a feature store (frames x hop / rate: the speech the network saw)."""

from __future__ import annotations

import math
from pathlib import Path

from dasv_cli.errors import InputError, where
from dasv_cli.io.lists import iter_fields, key_of


def read_durations(src: str | Path) -> dict[str, float]:
    """{key: seconds} from `key seconds` lines (a path or `-`); a repeated key or a bad number is an error."""
    out: dict[str, float] = {}
    lines: dict[str, int] = {}
    name = str(src)
    for name, number, fields in iter_fields(src):
        if len(fields) != 2:
            raise InputError(f"{where(name, number)}: expected 'key seconds', got {len(fields)} fields")
        key = key_of(fields[0])
        try:
            seconds = float(fields[1])
        except ValueError:
            raise InputError(f"{where(name, number)}: duration {fields[1]!r} is not a number") from None
        if not (math.isfinite(seconds) and seconds > 0):
            raise InputError(f"{where(name, number)}: duration {fields[1]!r} must be a positive number of seconds")
        if key in out:
            raise InputError(f"{where(name, number)}: duplicate key {key!r} (first at line {lines[key]})")
        out[key] = seconds
        lines[key] = number
    if not out:
        raise InputError(f"{name}: the durations file is empty")
    return out


def store_durations(directory: str | Path) -> dict[str, float]:
    """{key: seconds} for every utterance of a feature store: frames x hop_length / sample_rate."""
    from dasv_cli.io.store.reader import FeatureStore

    store = FeatureStore(directory)
    try:
        recipe = store.recipe
        hop = float(recipe.get("hop_length", 160)) / float(recipe.get("sample_rate", 16000))
        return {k: n * hop for k, n in store.lengths().items()}
    finally:
        store.close()
