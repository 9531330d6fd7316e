"""Cosine scores for trial lists from stored embeddings, optionally with adaptive s-norm against a cohort."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from dasv_cli.errors import InputError
from dasv_cli.eval.cosine import cosine_pairs, l2_normalise
from dasv_cli.eval.snorm import adaptive_snorm
from dasv_cli.eval.trials import drop_missing, trial_indices
from dasv_cli.io.lists import Trials

if TYPE_CHECKING:  # pragma: no cover
    from dasv_cli.io.embeddings import Embeddings


def cosine_scores(keys: Sequence[str] | Mapping[str, int], vectors: np.ndarray, trials: Trials) -> np.ndarray:
    """Cosine similarity of every trial (float64 [n_trials]); unknown keys raise InputError."""
    i1, i2 = trial_indices(trials, keys)
    return cosine_pairs(l2_normalise(vectors), i1, i2)


@dataclass
class ScoredTrials:
    """Scores for the trials that could be scored, and what happened on the way."""

    trials: Trials
    scores: np.ndarray  # float64 [len(trials)]
    skipped: int = 0
    snorm: dict[str, Any] | None = None  # {"cohort": path, "cohort_size": m, "top_n": n} when applied


def score_table(table: "Embeddings", trials: Trials, *, skip_missing: bool = False,
                table_name: str = "the embedding table", cohort: "Embeddings | None" = None,
                cohort_name: str | None = None, top_n: int = 300) -> ScoredTrials:
    """Score a trial list from an embedding table, optionally with adaptive s-norm against a cohort."""
    skipped = 0
    if skip_missing:
        trials, skipped = drop_missing(trials, table.index)
        if len(trials) == 0:
            raise InputError(f"none of the trials can be scored: no trial has both keys in {table_name}")
    i1, i2 = trial_indices(trials, table.index, table_name)
    unit = l2_normalise(table.vectors)
    scores = cosine_pairs(unit, i1, i2)
    snorm_info = None
    if cohort is not None:
        scores, snorm_info = adaptive_snorm(scores, unit, i1, i2, cohort, top_n=top_n,
                                            keys=table.keys, cohort_name=cohort_name)
    return ScoredTrials(trials=trials, scores=scores, skipped=skipped, snorm=snorm_info)
