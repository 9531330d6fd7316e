"""EER / minDCF / DET points against scikit-learn's roc_curve and a brute-force reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from dasv_cli.errors import DasvError, InputError
from dasv_cli.eval.metrics import compute_metrics, det_curve, metrics_and_det


def brute_force(scores, labels, p_targets=(0.01, 0.05)):
    """Reference: every distinct score (and reject-all) as a threshold, counted with plain Python loops.

    Returns (EER percent, {p: minDCF}, points (P_miss, P_fa, threshold), EER threshold): the EER and its
    threshold are both interpolated along the segment where P_miss crosses P_fa, with the same weight.
    The reject-all point's threshold is the next number above the top score (in the scores' dtype).
    """
    top = np.max(np.asarray(scores))
    scores = [float(s) for s in scores]
    labels = [int(v) for v in labels]
    tar = [s for s, y in zip(scores, labels) if y == 1]
    non = [s for s, y in zip(scores, labels) if y == 0]
    thresholds = sorted(set(scores)) + [float(np.nextafter(top, np.inf))]
    pts = []
    for t in thresholds:
        pm = sum(1 for s in tar if s < t) / len(tar)
        pf = sum(1 for s in non if s >= t) / len(non)
        pts.append((pm, pf, t))
    eer = eer_threshold = None
    for (pm0, pf0, t0), (pm1, pf1, t1) in zip(pts, pts[1:]):
        if pm0 < pf0 and pm1 >= pf1:
            # Where the segment from (pf0, pm0) to (pf1, pm1) meets the line pm == pf.
            a = (pf0 - pm0) / ((pm1 - pm0) - (pf1 - pf0))
            eer = pm0 + a * (pm1 - pm0)
            eer_threshold = t0 + a * (t1 - t0)
            break
    dcfs = {}
    for p in p_targets:
        costs = [(p * pm + (1 - p) * pf) / min(p, 1 - p) for pm, pf, _ in pts]
        dcfs[p] = min(costs)
    return eer * 100, dcfs, pts, eer_threshold


def from_sklearn(scores, labels, p_targets=(0.01, 0.05)):
    """EER and minDCF from sklearn's ROC points (no point dropped), crossing found segment by segment."""
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    fnr = 1 - tpr
    eer = None
    for i in range(1, len(fpr)):
        # sklearn goes from reject-all (fpr 0, fnr 1) towards accept-all.
        d0, d1 = fnr[i - 1] - fpr[i - 1], fnr[i] - fpr[i]
        if d0 > 0 and d1 <= 0:
            a = d0 / (d0 - d1)
            eer = fnr[i - 1] + a * (fnr[i] - fnr[i - 1])
            break
        if d0 == 0:
            eer = fnr[i - 1]
            break
    dcfs = {p: float(np.min((p * fnr + (1 - p) * fpr) / min(p, 1 - p))) for p in p_targets}
    return eer * 100, dcfs


def dcf_at(scores, labels, t, p):
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    pm = np.mean(s[y] < t)
    pf = np.mean(s[~y] >= t)
    return (p * pm + (1 - p) * pf) / min(p, 1 - p)


CASES = {
    "gaussian": lambda rng: (rng.standard_normal(3000) + 1.5 * (y := rng.random(3000) < 0.3), y),
    "heavily_tied": lambda rng: (np.round(rng.standard_normal(2000) * 0.7 + (y := rng.random(2000) < 0.5), 1), y),
    "few_values": lambda rng: (rng.integers(0, 4, 500).astype(float) + (y := rng.random(500) < 0.5), y),
    "all_above_0.99": lambda rng: (0.99 + 0.009 * rng.random(800) + 0.0005 * (y := rng.random(800) < 0.5), y),
    "mostly_targets_tied": lambda rng: (np.round(rng.standard_normal(1200) + (y := rng.random(1200) < 0.8), 1), y),
    "float32": lambda rng: ((rng.standard_normal(1500) + (y := rng.random(1500) < 0.4)).astype(np.float32), y),
}


# p_target 0.5 and 0.9 besides the defaults: from 0.5 up the normaliser is C_fa * (1 - p), not
# C_miss * p (every p below 0.5 gives the same minDCF either way).
P_TARGETS = (0.01, 0.05, 0.5, 0.9)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_brute_force_and_sklearn(case, seed):
    scores, labels = CASES[case](np.random.default_rng(seed))
    m = compute_metrics(scores, labels, p_targets=P_TARGETS)
    eer_bf, dcf_bf, _, eer_t_bf = brute_force(scores, labels, P_TARGETS)
    eer_sk, dcf_sk = from_sklearn(scores, labels.astype(int), P_TARGETS)
    assert m.eer == pytest.approx(eer_bf, abs=1e-9)
    assert m.eer == pytest.approx(eer_sk, abs=1e-9)
    # The EER threshold is interpolated on the same segment as the EER itself (not merely within range).
    assert m.eer_threshold == pytest.approx(eer_t_bf, rel=1e-9, abs=1e-12)
    assert sorted(m.min_dcf) == sorted(P_TARGETS)
    for p, (value, threshold) in m.min_dcf.items():
        assert value == pytest.approx(dcf_bf[p], abs=1e-9), p
        assert value == pytest.approx(dcf_sk[p], abs=1e-9), p
        # The reported threshold reaches the reported cost under the documented rule (score >= t accepts).
        assert dcf_at(scores, labels, threshold, p) == pytest.approx(value, abs=1e-9), p
    assert (m.min_dcf_p01, m.min_dcf_p01_threshold) == m.min_dcf[0.01]
    assert (m.min_dcf_p05, m.min_dcf_p05_threshold) == m.min_dcf[0.05]
    assert m.targets == int(labels.sum()) and m.nontargets == int((~labels).sum())
    assert m.trials == len(scores)


def test_det_points_are_the_brute_force_points():
    rng = np.random.default_rng(3)
    y = rng.random(400) < 0.5
    scores = np.round(rng.standard_normal(400) + y, 1)
    det = det_curve(scores, y)
    _, _, pts, _ = brute_force(scores, y)
    assert np.allclose(det.p_miss, [p[0] for p in pts])
    assert np.allclose(det.p_fa, [p[1] for p in pts])
    assert np.allclose(det.thresholds[:-1], [p[2] for p in pts[:-1]])
    assert det.thresholds[-1] > scores.max() and np.isfinite(det.thresholds[-1])
    assert np.all(np.diff(det.p_miss) >= 0) and np.all(np.diff(det.p_fa) <= 0)
    m, det2 = metrics_and_det(scores, y)
    assert m == compute_metrics(scores, y)
    assert np.array_equal(det2.p_fa, det.p_fa)


def test_known_values():
    # Perfect separation: EER 0, threshold at the lowest target score, minDCF 0.
    m = compute_metrics([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])
    assert m.eer == 0.0 and m.eer_threshold == pytest.approx(0.8)
    assert m.min_dcf_p01 == 0.0 and m.min_dcf_p05 == 0.0
    # Inverted: every target below every non-target.
    assert compute_metrics([0.9, 0.8, 0.1, 0.2], [0, 0, 1, 1]).eer == pytest.approx(100.0)
    # One value for everything: no information, 50 %, minDCF 1 (the cost of a fixed decision).
    m = compute_metrics([0.5] * 6, [1, 0, 1, 0, 1, 0])
    assert m.eer == pytest.approx(50.0) and m.min_dcf_p01 == pytest.approx(1.0)
    # One target error among four targets and no non-target error at t=0.35 -> interpolated EER.
    m = compute_metrics([0.3, 0.4, 0.5, 0.6, 0.1, 0.2, 0.25, 0.35], [1, 1, 1, 1, 0, 0, 0, 0])
    bf, _, _, _ = brute_force([0.3, 0.4, 0.5, 0.6, 0.1, 0.2, 0.25, 0.35], [1, 1, 1, 1, 0, 0, 0, 0])
    assert m.eer == pytest.approx(bf) and 0 < m.eer < 50


def test_scores_all_above_0_99_are_not_50_percent():
    # The original tool's 0.01 grid reports 50 % here; the exact ROC sees a perfectly separable list.
    rng = np.random.default_rng(0)
    non = 0.991 + 0.004 * rng.random(100)
    tar = 0.996 + 0.003 * rng.random(100)
    m = compute_metrics(np.concatenate([tar, non]), np.r_[np.ones(100), np.zeros(100)])
    assert m.eer == 0.0


def test_p_targets_extra_and_to_dict_is_json_ready():
    import json

    rng = np.random.default_rng(5)
    y = rng.random(300) < 0.5
    s = rng.standard_normal(300) + y
    m = compute_metrics(s, y, p_targets=(0.001,))
    _, dcf_bf, _, _ = brute_force(s, y, p_targets=(0.001,))
    assert m.min_dcf[0.001][0] == pytest.approx(dcf_bf[0.001])
    d = json.loads(json.dumps(m.to_dict()))
    for key in ("trials", "targets", "nontargets", "eer", "min_dcf_p01", "min_dcf_p05", "eer_threshold"):
        assert key in d
    assert d["trials"] == 300 and d["min_dcf_other"]["0.001"]["min_dcf"] == pytest.approx(dcf_bf[0.001])
    assert "EER" in m.summary() and "minDCF@0.01" in m.summary()


@pytest.mark.parametrize(
    "scores, labels, message",
    [
        ([0.1, 0.2, 0.3], [1, 1, 1], "no non-target"),
        ([0.1, 0.2, 0.3], [0, 0, 0], "no target"),
        ([0.1, float("nan"), 0.3], [1, 0, 1], r"1 of 3 scores are NaN \(first at trial 2\)"),
        ([0.1, float("inf"), 0.3], [1, 0, 1], "infinite"),
        ([0.1, 0.2], [1, 0, 1], "2 scores but 3 labels"),
        ([], [], "no trials"),
        ([0.1, 0.2], [1, 2], "trial 2 has 2"),
    ],
)
def test_degenerate_input_is_a_clear_error(scores, labels, message):
    with pytest.raises(InputError, match=message):
        compute_metrics(np.asarray(scores, dtype=float), np.asarray(labels))
    assert issubclass(InputError, DasvError)


def test_large_list_is_exact_against_sklearn():
    # 200k trials with ties: the vectorised path and sklearn agree to floating-point precision.
    rng = np.random.default_rng(7)
    y = rng.random(200_000) < 0.1
    s = np.round(rng.standard_normal(200_000) + 2 * y, 3)
    m = compute_metrics(s, y)
    eer_sk, dcf_sk = from_sklearn(s, y.astype(int))
    assert m.eer == pytest.approx(eer_sk, abs=1e-9)
    assert m.min_dcf_p01 == pytest.approx(dcf_sk[0.01], abs=1e-9)
    assert m.min_dcf_p05 == pytest.approx(dcf_sk[0.05], abs=1e-9)
