"""Verification metrics: EER, normalised minDCF and DET points, exact and vectorised.

Every number here comes from the full ROC of the scores, not from a threshold grid: the original tool
swept thresholds -1..1 in steps of 0.01 with Python loops, which is slow, coarse, and reports 50 % when
all scores lie above 0.99. Here the scores are sorted once (numpy's SIMD sort) and every distinct score
is a threshold, so 10 million trials take well under a second or two.

Convention: a trial is accepted (called "same speaker") when ``score >= threshold``.
- P_miss(t) = fraction of target trials with score < t
- P_fa(t)   = fraction of non-target trials with score >= t
The operating points are one per distinct score (accept everything from that score up) plus the
"reject all" point (P_miss = 1, P_fa = 0). Tied scores move together, so ties never get split by the
order in which they happen to be sorted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from dasv_cli.errors import InputError

DEFAULT_P_TARGETS = (0.01, 0.05)


@dataclass
class Metrics:
    """What a trial list scores to. `eer` is in percent; minDCFs are normalised (1.0 = no better than a
    fixed decision); each threshold is the score from which trials are accepted (`score >= t`)."""

    eer: float
    eer_threshold: float
    min_dcf_p01: float
    min_dcf_p01_threshold: float
    min_dcf_p05: float
    min_dcf_p05_threshold: float
    targets: int
    nontargets: int
    # minDCF for every p_target asked for (including 0.01 and 0.05): p_target -> (min_dcf, threshold)
    min_dcf: dict[float, tuple[float, float]] = field(default_factory=dict)

    @property
    def trials(self) -> int:
        return self.targets + self.nontargets

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (the keys `dasv score --json` prints): the EER in percent (`eer_percent`,
        and `eer` as before), minDCFs as normalised costs (fractions, 1.0 = no better than a fixed decision)."""
        out: dict[str, Any] = {
            "trials": self.trials,
            "targets": self.targets,
            "nontargets": self.nontargets,
            "eer": self.eer,  # percent, as eer_percent says (the key older scripts read)
            "eer_percent": self.eer,
            "eer_threshold": self.eer_threshold,
            "min_dcf_p01": self.min_dcf_p01,
            "min_dcf_p01_threshold": self.min_dcf_p01_threshold,
            "min_dcf_p05": self.min_dcf_p05,
            "min_dcf_p05_threshold": self.min_dcf_p05_threshold,
        }
        extra = {f"{p:g}": {"min_dcf": v, "threshold": t} for p, (v, t) in self.min_dcf.items()
                 if p not in DEFAULT_P_TARGETS}
        if extra:
            out["min_dcf_other"] = extra
        return out

    def summary(self) -> str:
        """One line for people: trials, EER, both minDCFs and the EER threshold."""
        return (
            f"trials {self.trials} ({self.targets} target, {self.nontargets} non-target)  "
            f"EER {self.eer:.3f}%  minDCF@0.01 {self.min_dcf_p01:.4f}  minDCF@0.05 {self.min_dcf_p05:.4f}  "
            f"threshold {self.eer_threshold:.4f}"
        )


@dataclass
class DetCurve:
    """All operating points, ordered by rising threshold: P_fa falls from 1 to 0, P_miss rises 0 to 1.

    `thresholds[i]` reaches point i (`score >= thresholds[i]` accepts); the last point (reject all) has
    a threshold just above the largest score.
    """

    p_fa: np.ndarray
    p_miss: np.ndarray
    thresholds: np.ndarray


@dataclass
class _Roc:
    miss: np.ndarray  # int64 counts per operating point
    fa: np.ndarray
    thresholds: np.ndarray  # float64, one per point (last: just above the max score)
    n_tar: int
    n_non: int
    _p_miss: np.ndarray | None = None
    _p_fa: np.ndarray | None = None

    @property
    def p_miss(self) -> np.ndarray:
        if self._p_miss is None:
            self._p_miss = self.miss / self.n_tar
        return self._p_miss

    @property
    def p_fa(self) -> np.ndarray:
        if self._p_fa is None:
            self._p_fa = self.fa / self.n_non
        return self._p_fa


def _check(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Scores as a 1-D float array and labels as bool; anything degenerate is an InputError."""
    s = np.asarray(scores)
    y = np.asarray(labels)
    if s.ndim != 1 or y.ndim != 1:
        raise InputError(f"scores and labels must be 1-D (got shapes {s.shape} and {y.shape})")
    if s.shape[0] != y.shape[0]:
        raise InputError(f"{s.shape[0]} scores but {y.shape[0]} labels")
    if s.size == 0:
        raise InputError("no trials to score")
    if not np.issubdtype(s.dtype, np.floating):
        try:
            s = s.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"scores are not numbers ({s.dtype})") from exc
    if s.dtype not in (np.float32, np.float64):
        s = s.astype(np.float64)
    finite = np.isfinite(s)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        kinds = sorted({("NaN" if np.isnan(s[i]) else "infinite") for i in bad[:1000]})
        raise InputError(
            f"{bad.size} of {s.size} scores are {' or '.join(kinds)} (first at trial {int(bad[0]) + 1}); "
            f"metrics need finite scores (are some embeddings all zero or NaN?)"
        )
    if y.dtype != np.bool_:
        if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
            raise InputError(f"labels must be 1 (target) or 0 (non-target), got dtype {y.dtype}")
        ok = (y == 0) | (y == 1)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise InputError(f"labels must be 1 (target) or 0 (non-target); trial {i + 1} has {y[i].item()!r}")
        y = y == 1
    n_tar = int(np.count_nonzero(y))
    if n_tar == 0:
        raise InputError(f"no target (same-speaker) trials among {y.size}: EER and minDCF need both kinds")
    if n_tar == y.size:
        raise InputError(f"no non-target (different-speaker) trials among {y.size}: EER and minDCF need both kinds")
    return s, y


def _roc(scores: Any, labels: Any) -> _Roc:
    """Counts of misses and false alarms at every distinct-score threshold, plus reject-all."""
    s, y = _check(scores, labels)
    n = s.size
    n_tar = int(np.count_nonzero(y))
    n_non = n - n_tar
    all_sorted = np.sort(s)
    # First index of each run of equal scores: accepting from there up is one operating point.
    starts = np.empty(0, dtype=np.int64)
    if n > 1:
        starts = np.flatnonzero(all_sorted[1:] != all_sorted[:-1]) + 1
    starts = np.concatenate(([0], starts, [n]))
    uniq = all_sorted[starts[:-1]]
    # Count the smaller class per distinct score (its run index by binary search), then accumulate:
    # below[j] = how many of that class score strictly below threshold j.
    small_is_tar = n_tar <= n_non
    small = np.sort(s[y] if small_is_tar else s[~y])
    counts = np.bincount(np.searchsorted(uniq, small), minlength=uniq.size)
    below_small = np.zeros(starts.size, dtype=np.int64)
    np.cumsum(counts, out=below_small[1:])
    below = starts  # all trials strictly below each threshold (starts[-1] = n: reject all)
    miss = below_small if small_is_tar else below - below_small  # targets below: misses
    fa = n_non - (below - miss)  # non-targets at or above: false alarms
    top = float(all_sorted[-1])
    thresholds = np.empty(starts.size, dtype=np.float64)
    thresholds[:-1] = uniq
    thresholds[-1] = float(np.nextafter(np.asarray(top, dtype=s.dtype), np.asarray(np.inf, dtype=s.dtype)))
    return _Roc(miss=miss, fa=fa, thresholds=thresholds, n_tar=n_tar, n_non=n_non)


def _eer(roc: _Roc) -> tuple[float, float]:
    """EER (fraction) and its threshold, linearly interpolated where P_miss crosses P_fa."""
    # P_miss rises and P_fa falls along the points; the first point 0 (accept all) has
    # P_miss = 0 < P_fa = 1 and the last (reject all) has P_miss = 1 > P_fa = 0, so k is in 1..last.
    # The comparison is done on integer counts (miss/n_tar >= fa/n_non), so it is exact.
    k = int(np.argmax(roc.miss * roc.n_non >= roc.fa * roc.n_tar))
    pm0, pm1 = roc.miss[k - 1] / roc.n_tar, roc.miss[k] / roc.n_tar
    pf0, pf1 = roc.fa[k - 1] / roc.n_non, roc.fa[k] / roc.n_non
    denom = (pm1 - pm0) - (pf1 - pf0)  # > 0: the gap P_miss - P_fa goes from < 0 to >= 0
    a = (pf0 - pm0) / denom
    eer = pm0 + a * (pm1 - pm0)
    t0, t1 = roc.thresholds[k - 1], roc.thresholds[k]
    threshold = t0 + a * (t1 - t0)
    return float(eer), float(threshold)


def _min_dcf(roc: _Roc, p_target: float, c_miss: float = 1.0, c_fa: float = 1.0) -> tuple[float, float]:
    """Normalised minimum detection cost and the threshold that reaches it (the lowest such)."""
    if not 0.0 < p_target < 1.0:
        raise InputError(f"p_target must lie strictly between 0 and 1, got {p_target}")
    dcf = c_miss * p_target * roc.p_miss + c_fa * (1.0 - p_target) * roc.p_fa
    i = int(np.argmin(dcf))
    norm = min(c_miss * p_target, c_fa * (1.0 - p_target))
    return float(dcf[i] / norm), float(roc.thresholds[i])


def _from_roc(roc: _Roc, p_targets: Iterable[float]) -> Metrics:
    eer, eer_t = _eer(roc)
    wanted = list(dict.fromkeys([*DEFAULT_P_TARGETS, *(float(p) for p in p_targets)]))
    dcfs = {p: _min_dcf(roc, p) for p in wanted}
    return Metrics(
        eer=eer * 100.0,
        eer_threshold=eer_t,
        min_dcf_p01=dcfs[0.01][0],
        min_dcf_p01_threshold=dcfs[0.01][1],
        min_dcf_p05=dcfs[0.05][0],
        min_dcf_p05_threshold=dcfs[0.05][1],
        targets=roc.n_tar,
        nontargets=roc.n_non,
        min_dcf=dcfs,
    )


def compute_metrics(scores: Any, labels: Any, p_targets: Iterable[float] = DEFAULT_P_TARGETS) -> Metrics:
    """EER (percent), minDCF at p_target 0.01 and 0.05 (C_miss = C_fa = 1) and their thresholds.

    `labels` are 1/True for target (same-speaker) trials and 0/False for non-targets. NaN or infinite
    scores, or a list without both kinds of trial, raise InputError: a silent 50 % would hide the bug.
    """
    return _from_roc(_roc(scores, labels), p_targets)


def det_curve(scores: Any, labels: Any) -> DetCurve:
    """Every operating point of the scores (P_fa, P_miss, threshold), for DET plots and analysis."""
    roc = _roc(scores, labels)
    return DetCurve(p_fa=roc.p_fa, p_miss=roc.p_miss, thresholds=roc.thresholds)


def metrics_and_det(scores: Any, labels: Any,
                    p_targets: Iterable[float] = DEFAULT_P_TARGETS) -> tuple[Metrics, DetCurve]:
    """Both at once from a single sort (what `dasv score --det-plot` uses)."""
    roc = _roc(scores, labels)
    return _from_roc(roc, p_targets), DetCurve(p_fa=roc.p_fa, p_miss=roc.p_miss, thresholds=roc.thresholds)
