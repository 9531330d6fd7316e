"""Cosine scores for trial lists from stored embeddings: each vector normalised once, trials gathered by
key index and scored in vectorised chunks (no per-trial model call, no per-trial Python arithmetic)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from dasv_cli.errors import InputError
from dasv_cli.io.lists import Trials

if TYPE_CHECKING:  # pragma: no cover
    from dasv_cli.eval.metrics import Metrics
    from dasv_cli.io.embeddings import Embeddings

# Norms below this are clamped, as torch.nn.functional.cosine_similarity does (eps=1e-8): an all-zero
# vector scores 0 against everything instead of NaN.
EPS = 1e-8
_CHUNK = 1 << 16


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); zero rows stay zero."""
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(norms, EPS)


def _index_of(keys: Sequence[str] | Mapping[str, int]) -> Mapping[str, int]:
    if isinstance(keys, Mapping):
        return keys
    return {k: i for i, k in enumerate(keys)}


def missing_keys(trials: Trials, keys: Sequence[str] | Mapping[str, int]) -> list[str]:
    """Trial keys (each once, in first-seen order) that have no embedding."""
    index = _index_of(keys)
    return [k for k in trials.unique_keys() if k not in index]


def describe_missing(missing: Sequence[str], total: int, table: str = "the embedding table",
                     shown: int = 10) -> str:
    head = ", ".join(missing[:shown])
    more = f", ... ({len(missing) - shown} more)" if len(missing) > shown else ""
    return f"{len(missing)} of {total} trial keys are not in {table}: {head}{more}"


def select_trials(trials: Trials, keep: np.ndarray) -> Trials:
    """The trials where `keep` (bool [n]) is true, order kept."""
    idx = np.flatnonzero(keep)
    return Trials([trials.key1[i] for i in idx], [trials.key2[i] for i in idx], trials.labels[idx])


def drop_missing(trials: Trials, keys: Sequence[str] | Mapping[str, int]) -> tuple[Trials, int]:
    """(trials whose two keys both have embeddings, how many were dropped)."""
    index = _index_of(keys)
    keep = np.fromiter((a in index and b in index for a, b in zip(trials.key1, trials.key2)),
                       dtype=bool, count=len(trials))
    return select_trials(trials, keep), int(len(trials) - keep.sum())


def trial_indices(trials: Trials, keys: Sequence[str] | Mapping[str, int],
                  table: str = "the embedding table") -> tuple[np.ndarray, np.ndarray]:
    """Row numbers of both sides of every trial; unknown keys are one InputError listing them."""
    index = _index_of(keys)
    try:
        i1 = np.fromiter((index[k] for k in trials.key1), dtype=np.int64, count=len(trials))
        i2 = np.fromiter((index[k] for k in trials.key2), dtype=np.int64, count=len(trials))
    except KeyError:
        missing = missing_keys(trials, index)
        raise InputError(describe_missing(missing, len(trials.unique_keys()), table)
                         + " (--skip-missing scores the rest)") from None
    return i1, i2


def cosine_pairs(unit: np.ndarray, i1: np.ndarray, i2: np.ndarray, chunk: int = _CHUNK) -> np.ndarray:
    """Dot products of already unit-length rows i1[k], i2[k] (float64 [n])."""
    out = np.empty(i1.size, dtype=np.float64)
    for start in range(0, i1.size, chunk):
        a = unit[i1[start:start + chunk]]
        b = unit[i2[start:start + chunk]]
        out[start:start + chunk] = np.einsum("ij,ij->i", a, b, dtype=np.float64)
    return out


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
        from dasv_cli.eval.snorm import adaptive_snorm

        scores, snorm_info = adaptive_snorm(scores, unit, i1, i2, cohort, top_n=top_n,
                                            keys=table.keys, cohort_name=cohort_name)
    return ScoredTrials(trials=trials, scores=scores, skipped=skipped, snorm=snorm_info)


def evaluate_trials(model: Any, store: Any, trials: Trials, norm: str = "cmn", device: str = "cpu",
                    progress: bool = False) -> "Metrics":
    """EER and minDCFs of `model` on `trials`, each unique utterance of the store embedded once.

    This is what training validation calls: the model runs in eval mode and is left in the mode it
    was found in.
    """
    from dasv_cli.eval.embed import embed_store
    from dasv_cli.eval.metrics import compute_metrics

    keys = trials.unique_keys()
    absent = [k for k in keys if k not in store]
    if absent:
        raise InputError(describe_missing(absent, len(keys), "the feature store"))
    vectors = embed_store(model, store, keys, norm=norm, device=device, progress=progress)
    return compute_metrics(cosine_scores(keys, vectors, trials), trials.labels)
