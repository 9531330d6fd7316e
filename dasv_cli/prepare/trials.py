"""Trials drawn from a label file, for corpora that ship none (LibriSpeech, a held-out part of a set).

N trials, half same-speaker (target; the odd one is a non-target), uniformly among the label file's
utterance pairs: no utterance paired with itself, no pair twice (in either order), seeded, so the
same labels, N and seed give the same list. Small pools are enumerated; large ones are sampled with
rejection (each same-speaker pair is equally likely: a speaker is drawn in proportion to its pairs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dasv_cli.errors import InputError, UsageError
from dasv_cli.io.atomic import write_text_atomic

TRIALS_NAME = "trials.txt"
_ENUMERATE = 4_000_000  # pools this small are listed outright
_MAX_LISTED = 20_000_000  # the most pairs ever listed in memory (asking for most of a bigger pool)


@dataclass
class DrawnTrials:
    """What `dasv prepare trials` drew and wrote."""

    labels: str
    seed: int
    key1: list[str] = field(default_factory=list)
    key2: list[str] = field(default_factory=list)
    target: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    speakers: int = 0
    written: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        used = len(set(self.key1) | set(self.key2))
        return {"labels": self.labels, "seed": self.seed, "trials": len(self.key1),
                "targets": int(self.target.sum()), "nontargets": int(len(self.target) - self.target.sum()),
                "utterances_used": used, "speakers": self.speakers, "written": self.written}


def _take(rng: np.random.Generator, pool: tuple[np.ndarray, np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    pick = rng.choice(len(pool[0]), size=k, replace=False)
    return pool[0][pick], pool[1][pick]


def _unique_until(rng: np.random.Generator, k: int, draw) -> tuple[np.ndarray, np.ndarray]:
    """Draw batches of candidate pairs (i < j) with `draw(rng, m)` until `k` distinct ones are kept."""
    seen: dict[tuple[int, int], None] = {}
    while len(seen) < k:
        i, j = draw(rng, 2 * (k - len(seen)) + 64)
        for pair in zip(i.tolist(), j.tolist()):
            if pair not in seen:
                seen[pair] = None
                if len(seen) == k:
                    break
    got = np.array(list(seen), dtype=np.int64).reshape(-1, 2)
    return got[:, 0], got[:, 1]


def _targets(rng: np.random.Generator, labels: np.ndarray, k: int, total: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    if total <= _ENUMERATE or (2 * k > total and total <= _MAX_LISTED):
        parts_i, parts_j = [], []
        for s, c in zip(starts, counts):
            if c >= 2:
                a, b = np.triu_indices(int(c), 1)
                parts_i.append(order[s + a])
                parts_j.append(order[s + b])
        i, j = _take(rng, (np.concatenate(parts_i), np.concatenate(parts_j)), k)
        return np.minimum(i, j), np.maximum(i, j)
    if 2 * k > total:
        raise InputError(f"asking for {k} of the {total} same-speaker pairs: ask for at most {min(total // 2, _MAX_LISTED)}")
    weights = counts * (counts - 1) / 2.0
    p = weights / weights.sum()

    def draw(r: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
        spk = r.choice(len(counts), size=m, p=p)
        a = r.integers(0, counts[spk])
        b = r.integers(0, counts[spk] - 1)
        b = b + (b >= a)
        i, j = order[starts[spk] + a], order[starts[spk] + b]
        return np.minimum(i, j), np.maximum(i, j)

    return _unique_until(rng, k, draw)


def _nontargets(rng: np.random.Generator, labels: np.ndarray, k: int, total: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(labels)
    all_pairs = n * (n - 1) // 2
    if all_pairs <= _ENUMERATE or (2 * k > total and all_pairs <= _MAX_LISTED):
        i, j = np.triu_indices(n, 1)
        differ = labels[i] != labels[j]
        return _take(rng, (i[differ], j[differ]), k)
    if 2 * k > total:
        raise InputError(f"asking for {k} of the {total} different-speaker pairs: ask for at most {total // 2}")

    def draw(r: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
        i = r.integers(0, n, size=m)
        j = r.integers(0, n - 1, size=m)
        j = j + (j >= i)
        keep = labels[i] != labels[j]
        i, j = i[keep], j[keep]
        return np.minimum(i, j), np.maximum(i, j)

    return _unique_until(rng, k, draw)


def draw_trials(labels: np.ndarray, n: int, seed: int, name: str = "labels") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, target) index pairs into `labels` (speaker per utterance): n//2 target, the rest non-target,
    shuffled together. InputError when the labels hold too few pairs of either kind."""
    if n < 2:
        raise UsageError(f"-n must be at least 2 (one same- and one different-speaker trial), got {n}")
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels)
    n_target, n_non = n // 2, n - n // 2
    target_total = int((counts * (counts - 1) // 2).sum())
    non_total = len(labels) * (len(labels) - 1) // 2 - target_total
    for want, have, kind in ((n_target, target_total, "same-speaker"), (n_non, non_total, "different-speaker")):
        if want > have:
            raise InputError(f"{name}: only {have} {kind} pairs among its {len(labels)} utterances "
                             f"({int((counts > 0).sum())} speakers); {want} asked for (-n {n})")
    rng = np.random.default_rng(seed)
    ti, tj = _targets(rng, labels, n_target, target_total)
    ni, nj = _nontargets(rng, labels, n_non, non_total)
    i, j = np.concatenate([ti, ni]), np.concatenate([tj, nj])
    target = np.concatenate([np.ones(len(ti), np.int8), np.zeros(len(ni), np.int8)])
    perm = rng.permutation(len(i))
    return i[perm], j[perm], target[perm]


def prepare_trials(labels_path: str | Path, n: int, seed: int, out_dir: str | Path) -> DrawnTrials:
    """Draw `n` trials from a label file (`key label [x]` or `key speaker`) into DIR/trials.txt."""
    from dasv_cli.io.lists import join_fields, read_train_labels
    from dasv_cli.io.paths import require_file

    src = str(require_file(labels_path, "a label file"))
    labels = read_train_labels(src)
    i, j, target = draw_trials(labels.labels, n, seed, name=src)
    keys = labels.keys
    drawn = DrawnTrials(labels=src, seed=seed, key1=[keys[x] for x in i], key2=[keys[x] for x in j],
                        target=target, speakers=labels.num_classes)
    path = Path(out_dir) / TRIALS_NAME
    rows = [join_fields([str(t), a, b]) + "\n" for t, a, b in zip(target.tolist(), drawn.key1, drawn.key2)]
    write_text_atomic(path, "trial list", lambda fh: fh.writelines(rows))
    drawn.written.append(str(path))
    return drawn
