"""Metrics of calibrated scores (natural-log likelihood ratios): actual DCF, Cllr and minCllr.

minDCF and EER (metrics.py) ask how well scores *rank* trials; these ask whether the scores can be
*used as they are*: the actual DCF applies the Bayes decision threshold -log(p / (1 - p)) to each LLR,
and Cllr (Brümmer & du Preez, 2006) is the cost of the LLRs averaged over all operating points, in
bits. minCllr is the Cllr of the best monotonic recalibration of the same scores (PAV, the optimal
isotonic map of scores to target posteriors), so Cllr - minCllr is what calibration loses.

Conventions as metrics.py: a trial is accepted when `llr >= threshold`; DCFs are normalised by
min(p C_miss, (1 - p) C_fa) with C_miss = C_fa = 1, so an actual DCF of 1 is no better than always
deciding the same way, and can exceed 1 when the LLRs are badly calibrated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from dasv_cli.eval.metrics import DEFAULT_P_TARGETS, _check, compute_metrics

_LN2 = math.log(2.0)


def bayes_threshold(p_target: float) -> float:
    """The LLR from which a Bayes decision at prior `p_target` (C_miss = C_fa = 1) accepts."""
    return -math.log(p_target / (1.0 - p_target))


def act_dcf(llr: Any, labels: Any, p_target: float) -> float:
    """Normalised actual DCF of LLRs at `p_target`: accept where llr >= -logit(p_target)."""
    if not 0.0 < p_target < 1.0:
        from dasv_cli.errors import InputError

        raise InputError(f"p_target must lie strictly between 0 and 1, got {p_target}")
    s, y = _check(llr, labels)
    t = bayes_threshold(p_target)
    p_miss = float(np.count_nonzero(s[y] < t)) / int(np.count_nonzero(y))
    p_fa = float(np.count_nonzero(s[~y] >= t)) / int(np.count_nonzero(~y))
    dcf = p_target * p_miss + (1.0 - p_target) * p_fa
    return dcf / min(p_target, 1.0 - p_target)


def _cllr_of(llr: np.ndarray, y: np.ndarray) -> float:
    """Cllr in bits; LLRs may be +-inf (PAV gives them where a block holds one class only)."""
    tar = np.logaddexp(0.0, -llr[y]).mean()  # -log P(target | x) at prior 0.5
    non = np.logaddexp(0.0, llr[~y]).mean()
    return float(0.5 * (tar + non) / _LN2)


def cllr(llr: Any, labels: Any) -> float:
    """Cllr = (mean_tar log2(1 + e^-llr) + mean_non log2(1 + e^llr)) / 2; 1 bit for llr = 0 everywhere."""
    s, y = _check(llr, labels)
    return _cllr_of(s.astype(np.float64), y)


def pav_posteriors(scores: Any, labels: Any) -> np.ndarray:
    """Target posteriors [n] of the optimal non-decreasing map of scores (pool-adjacent-violators).

    Tied scores are pooled before PAV: no threshold can separate them, so they share one posterior
    (as an isotonic regression on the scores does).
    """
    s, y = _check(scores, labels)
    uniq, inverse = np.unique(s, return_inverse=True)
    weight = np.bincount(inverse, minlength=uniq.size).astype(np.float64)
    hits = np.bincount(inverse, weights=y.astype(np.float64), minlength=uniq.size)
    # stack of blocks (Python lists: scalar access is what this loop does): hits, weight, unique scores spanned
    sum_y: list[float] = []
    sum_w: list[float] = []
    span: list[int] = []
    for h, w in zip(hits.tolist(), weight.tolist()):
        # merge while the previous block's mean is not below the new one's (cross-multiplied)
        n = 1
        while sum_y and sum_y[-1] * w >= h * sum_w[-1]:
            h += sum_y.pop()
            w += sum_w.pop()
            n += span.pop()
        sum_y.append(h)
        sum_w.append(w)
        span.append(n)
    per_unique = np.repeat(np.asarray(sum_y) / np.asarray(sum_w), span)
    return per_unique[inverse]


def min_cllr(scores: Any, labels: Any) -> float:
    """Cllr after the optimal monotonic calibration (PAV posteriors turned into LLRs)."""
    s, y = _check(scores, labels)
    post = pav_posteriors(s, y)
    n_tar = int(np.count_nonzero(y))
    prior_logit = math.log(n_tar / (y.size - n_tar))
    with np.errstate(divide="ignore"):
        llr = np.log(post) - np.log1p(-post) - prior_logit
    return _cllr_of(llr, y)


@dataclass
class CalibratedSummary:
    """How usable LLRs are: actual vs minimum DCF per prior, Cllr vs minCllr, and the EER."""

    act_dcf: dict[float, float]
    min_dcf: dict[float, float]
    cllr: float
    min_cllr: float
    eer: float  # percent
    targets: int
    nontargets: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: act_dcf_p01, min_dcf_p01, ... for each prior (normalised costs: fractions), then cllr,
        min_cllr (bits), and the EER in percent (eer_percent; eer too, the key older scripts read)."""
        out: dict[str, Any] = {"trials": self.targets + self.nontargets, "targets": self.targets,
                               "nontargets": self.nontargets}
        for p, v in self.act_dcf.items():
            tag = f"p{p:g}".replace("0.", "")  # 0.01 -> p01, 0.05 -> p05
            out[f"act_dcf_{tag}"] = v
            out[f"min_dcf_{tag}"] = self.min_dcf[p]
        out.update(cllr=self.cllr, min_cllr=self.min_cllr, eer=self.eer, eer_percent=self.eer)
        return out

    def summary(self) -> str:
        """One line for people."""
        dcfs = "  ".join(f"actDCF@{p:g} {a:.4f} (min {self.min_dcf[p]:.4f})" for p, a in self.act_dcf.items())
        return f"Cllr {self.cllr:.4f} (min {self.min_cllr:.4f})  {dcfs}  EER {self.eer:.3f}%"


def calibrated_summary(llr: Any, labels: Any, p_targets: Iterable[float] = DEFAULT_P_TARGETS) -> CalibratedSummary:
    """Actual DCF at each prior (Bayes threshold on the LLRs), Cllr and minCllr of `llr` with `labels`."""
    s, y = _check(llr, labels)
    wanted = [float(p) for p in p_targets]
    ranking = compute_metrics(s, y, wanted)
    return CalibratedSummary(
        act_dcf={p: act_dcf(s, y, p) for p in wanted},
        min_dcf={p: ranking.min_dcf[p][0] for p in wanted},
        cllr=_cllr_of(s.astype(np.float64), y),
        min_cllr=min_cllr(s, y),
        eer=ranking.eer,
        targets=ranking.targets,
        nontargets=ranking.nontargets,
    )
