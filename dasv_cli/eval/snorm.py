"""Adaptive symmetric score normalisation (AS-norm) against a cohort of embeddings.

For each side of a trial, the utterance is scored against every cohort embedding; the mean and
standard deviation of its `top_n` highest cohort scores normalise the trial score:

    s' = ((s - mu_1) / sd_1 + (s - mu_2) / sd_2) / 2

The cohort should be speakers outside the trial list (e.g. training speakers). A cohort entry with the
same key as the utterance being normalised is left out of that utterance's statistics, so a cohort
that overlaps the trials does not score an utterance against itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from dasv_cli.errors import InputError
from dasv_cli.eval.cosine import l2_normalise

if TYPE_CHECKING:  # pragma: no cover
    from dasv_cli.io.embeddings import Embeddings

# Cohort-score block size (rows x cohort) held in memory at once: about 64 MB of float32.
_BLOCK_ELEMENTS = 1 << 24


def cohort_statistics(unit: np.ndarray, rows: np.ndarray, cohort_unit: np.ndarray, top_n: int,
                      self_index: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the top-n cohort scores for each of `rows` of `unit` (both unit-length).

    `self_index[j]` is the cohort row to leave out for rows[j] (-1 for none).
    """
    m = cohort_unit.shape[0]
    mean = np.empty(rows.size, dtype=np.float64)
    std = np.empty(rows.size, dtype=np.float64)
    block = max(1, _BLOCK_ELEMENTS // max(m, 1))
    for start in range(0, rows.size, block):
        sel = rows[start:start + block]
        s = unit[sel] @ cohort_unit.T  # [b, m] float32
        if self_index is not None:
            own = self_index[start:start + block]
            hit = np.flatnonzero(own >= 0)
            s[hit, own[hit]] = -np.inf
        top = np.partition(s, m - top_n, axis=1)[:, m - top_n:].astype(np.float64)
        mean[start:start + block] = top.mean(axis=1)
        std[start:start + block] = top.std(axis=1)
    return mean, std


def adaptive_snorm(scores: np.ndarray, unit: np.ndarray, i1: np.ndarray, i2: np.ndarray,
                   cohort: "Embeddings", top_n: int = 300, keys: Sequence[str] | None = None,
                   cohort_name: str | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """AS-norm'd scores for trials (i1[k], i2[k]) of unit-length `unit`, and a summary of what was done.

    `keys` names the rows of `unit` (to leave an utterance's own entry out of its cohort).
    """
    name = cohort_name or "the cohort"
    if top_n < 2:
        raise InputError(f"--top-n must be at least 2 (a standard deviation needs two scores), got {top_n}")
    if len(cohort) == 0:
        raise InputError(f"{name}: the cohort table is empty")
    if cohort.dim != unit.shape[1]:
        raise InputError(
            f"{name}: cohort embeddings have {cohort.dim} dimensions but the trial embeddings have "
            f"{unit.shape[1]} (made by another model?)"
        )
    cohort_unit = l2_normalise(cohort.vectors)
    rows = np.unique(np.concatenate([i1, i2]))
    self_index = None
    if keys is not None:
        cidx = cohort.index
        self_index = np.fromiter((cidx.get(keys[r], -1) for r in rows), dtype=np.int64, count=rows.size)
        if not (self_index >= 0).any():
            self_index = None
    available = len(cohort) - (1 if self_index is not None else 0)
    if available < 2:
        raise InputError(f"{name}: the cohort needs at least 2 embeddings besides the utterance itself")
    n = min(top_n, available)
    mean, std = cohort_statistics(unit, rows, cohort_unit, n, self_index)
    std = np.maximum(std, 1e-8)
    pos1 = np.searchsorted(rows, i1)
    pos2 = np.searchsorted(rows, i2)
    normed = 0.5 * ((scores - mean[pos1]) / std[pos1] + (scores - mean[pos2]) / std[pos2])
    info = {"method": "adaptive s-norm", "cohort": cohort_name, "cohort_size": len(cohort),
            "top_n": n, "top_n_requested": top_n}
    return normed, info
