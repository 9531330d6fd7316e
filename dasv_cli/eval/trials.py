"""Trial keys against a set of embedded (or stored) keys: which are missing, how to say so, which trials
can be scored, and the row numbers of both sides of every trial."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from dasv_cli.errors import InputError
from dasv_cli.io.lists import Trials


def key_index(keys: Sequence[str] | Mapping[str, int]) -> Mapping[str, int]:
    """key -> row; a mapping (such as Embeddings.index) is used as it is."""
    if isinstance(keys, Mapping):
        return keys
    return {k: i for i, k in enumerate(keys)}


def missing_keys(trials: Trials, keys: Sequence[str] | Mapping[str, int]) -> list[str]:
    """Trial keys (each once, in first-seen order) that have no embedding."""
    index = key_index(keys)
    return [k for k in trials.unique_keys() if k not in index]


def describe_missing(missing: Sequence[str], total: int, table: str = "the embedding table",
                     shown: int = 10, trials: Trials | None = None) -> str:
    """`N of M trial keys are not in TABLE: k1, k2, ... (K more)`: one line however many are missing;
    given the `trials` (read from files), it starts with 'FILE:LINE' of the first trial naming k1."""
    head = ", ".join(missing[:shown])
    more = f", ... ({len(missing) - shown} more)" if len(missing) > shown else ""
    at = _first_naming(trials, missing[0]) if trials is not None and missing else None
    return f"{at + ': ' if at else ''}{len(missing)} of {total} trial keys are not in {table}: {head}{more}"


def _first_naming(trials: Trials, key: str) -> str | None:
    """'FILE:LINE' of the first trial that names `key` (None when the trials carry no lines)."""
    for i, (a, b) in enumerate(zip(trials.key1, trials.key2)):
        if key in (a, b):
            return trials.where(i)
    return None


def select_trials(trials: Trials, keep: np.ndarray) -> Trials:
    """The trials where `keep` (bool [n]) is true, order kept."""
    idx = np.flatnonzero(keep)
    return Trials([trials.key1[i] for i in idx], [trials.key2[i] for i in idx], trials.labels[idx])


def drop_missing(trials: Trials, keys: Sequence[str] | Mapping[str, int]) -> tuple[Trials, int]:
    """(trials whose two keys both have embeddings, how many were dropped)."""
    index = key_index(keys)
    keep = np.fromiter((a in index and b in index for a, b in zip(trials.key1, trials.key2)),
                       dtype=bool, count=len(trials))
    return select_trials(trials, keep), int(len(trials) - keep.sum())


def trial_indices(trials: Trials, keys: Sequence[str] | Mapping[str, int],
                  table: str = "the embedding table") -> tuple[np.ndarray, np.ndarray]:
    """Row numbers of both sides of every trial; unknown keys are one InputError listing them."""
    index = key_index(keys)
    try:
        i1 = np.fromiter((index[k] for k in trials.key1), dtype=np.int64, count=len(trials))
        i2 = np.fromiter((index[k] for k in trials.key2), dtype=np.int64, count=len(trials))
    except KeyError:
        missing = missing_keys(trials, index)
        raise InputError(describe_missing(missing, len(trials.unique_keys()), table, trials=trials)
                         + " (--skip-missing scores the rest)") from None
    return i1, i2
