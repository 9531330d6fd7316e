"""Calibration (scores -> LLRs) and the metrics of LLRs, each checked against an independent computation.

- Cllr: the formula written out here; minCllr: scikit-learn's IsotonicRegression (PAV) in place of
  dasv's own PAV; actual DCF: decisions counted here at the Bayes threshold.
- The fit: equal-variance Gaussian scores have a known linear LLR; the prior-weighted objective is
  minimised here with scipy and compared with dasv's scikit-learn fit.
- Real-ish scores: cosine scores of mean log-mel vectors of the bundled demo speech.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from dasv_cli.errors import InputError, UsageError
from dasv_cli.eval.calibration import (
    Calibration,
    apply_calibration,
    calibrate_score_file,
    calibrate_trials,
    fit_calibration,
    load_calibration,
    save_calibration,
)
from dasv_cli.eval.llr_metrics import act_dcf, calibrated_summary, cllr, min_cllr, pav_posteriors
from dasv_cli.eval.metrics import compute_metrics
from dasv_cli.eval.quality import Quality, duration_quality


def gaussian_scores(n_tar: int, n_non: int, mu: float = 1.0, sigma: float = 1.0, seed: int = 0):
    """Targets N(mu, sigma^2), non-targets N(-mu, sigma^2): the LLR is (2 mu / sigma^2) s exactly."""
    rng = np.random.default_rng(seed)
    s = np.concatenate([rng.normal(mu, sigma, n_tar), rng.normal(-mu, sigma, n_non)])
    y = np.concatenate([np.ones(n_tar, bool), np.zeros(n_non, bool)])
    return s, y


def cllr_reference(llr: np.ndarray, y: np.ndarray) -> float:
    tar = np.mean([math.log2(1 + math.exp(-v)) for v in llr[y]])
    non = np.mean([math.log2(1 + math.exp(v)) for v in llr[~y]])
    return 0.5 * (tar + non)


def min_cllr_reference(scores: np.ndarray, y: np.ndarray) -> float:
    """Cllr of the isotonic (PAV) posteriors of scikit-learn, turned into LLRs at the empirical prior."""
    from sklearn.isotonic import IsotonicRegression

    post = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True).fit(scores, y.astype(float)).predict(scores)
    prior = y.mean()
    total_tar = total_non = 0.0
    for p, is_tar in zip(post, y):
        if is_tar:  # -log2 of the posterior odds relative to the prior odds, per class
            total_tar += math.log2(1 + (1 - p) / p * prior / (1 - prior))
        else:
            total_non += 0.0 if p == 0 else math.log2(1 + p / (1 - p) * (1 - prior) / prior)
    return 0.5 * (total_tar / y.sum() + total_non / (~y).sum())


def test_cllr_formula_and_known_values() -> None:
    s, y = gaussian_scores(300, 900, seed=1)
    llr = 2.0 * s
    assert cllr(llr, y) == pytest.approx(cllr_reference(llr, y), rel=1e-12)
    assert cllr(np.zeros(10), np.arange(10) % 2) == pytest.approx(1.0, abs=1e-15)  # no information: 1 bit
    # perfect, confident LLRs cost almost nothing; confidently wrong ones cost a lot
    assert cllr(np.array([50.0, 50.0, -50.0]), np.array([1, 1, 0])) < 1e-20
    assert cllr(np.array([-10.0, 10.0]), np.array([1, 0])) == pytest.approx(math.log2(1 + math.exp(10)), rel=1e-12)


def test_min_cllr_matches_isotonic_regression() -> None:
    for seed, rounding in ((2, None), (3, 1)):  # continuous scores, then scores with many ties
        s, y = gaussian_scores(400, 1600, mu=0.8, seed=seed)
        if rounding is not None:
            s = np.round(s, rounding)
        assert min_cllr(s, y) == pytest.approx(min_cllr_reference(s, y), rel=1e-9, abs=1e-12)
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(increasing=True).fit(s, y.astype(float)).predict(s)
        np.testing.assert_allclose(pav_posteriors(s, y), iso, atol=1e-12)
    # known answers: separable scores -> 0; uninformative (all tied) -> 1 bit; minCllr <= Cllr of any
    # monotonic map, including the true LLR
    assert min_cllr(np.array([0.1, 0.2, 0.7, 0.9]), np.array([0, 0, 1, 1])) == 0.0
    assert min_cllr(np.full(20, 0.3), np.arange(20) % 4 == 0) == pytest.approx(1.0, abs=1e-12)
    s, y = gaussian_scores(500, 500, seed=4)
    assert min_cllr(s, y) <= cllr(2.0 * s, y)


def test_act_dcf_counts_decisions_at_the_bayes_threshold() -> None:
    s, y = gaussian_scores(200, 2000, seed=5)
    llr = 2.0 * s + 0.3
    for p in (0.01, 0.05, 0.5):
        t = -math.log(p / (1 - p))
        p_miss = sum(1 for v, tar in zip(llr, y) if tar and v < t) / y.sum()
        p_fa = sum(1 for v, tar in zip(llr, y) if not tar and v >= t) / (~y).sum()
        expected = (p * p_miss + (1 - p) * p_fa) / min(p, 1 - p)
        assert act_dcf(llr, y, p) == pytest.approx(expected, rel=1e-12)
        assert act_dcf(llr, y, p) >= compute_metrics(llr, y, [p]).min_dcf[p][0] - 1e-12
    assert act_dcf(np.zeros(8), np.arange(8) % 2, 0.01) == pytest.approx(1.0)  # rejects all: 1.0
    with pytest.raises(InputError):
        act_dcf(np.array([0.0, np.nan]), np.array([1, 0]), 0.01)


def test_fit_recovers_the_known_llr_at_any_training_prior() -> None:
    s, y = gaussian_scores(20000, 20000, mu=1.0, sigma=1.0, seed=6)
    for prior in (0.5, 0.05):
        cal = fit_calibration(s, y, prior=prior)
        assert cal.weights["score"] == pytest.approx(2.0, abs=0.06)  # true slope 2 mu / sigma^2
        assert cal.offset == pytest.approx(0.0, abs=0.06)  # true offset 0: the prior's log-odds removed
        assert cal.prior == prior and cal.trials == 40000 and cal.targets == 20000
    # shifted and scaled scores: calibration undoes the affine distortion
    cal = fit_calibration(3.0 * s - 1.0, y)
    np.testing.assert_allclose(apply_calibration(cal, 3.0 * s - 1.0), apply_calibration(fit_calibration(s, y), s),
                               atol=1e-6)


def test_fit_minimises_the_prior_weighted_objective() -> None:
    from scipy.optimize import minimize

    rng = np.random.default_rng(7)
    s = np.concatenate([rng.normal(0.6, 0.15, 300), rng.normal(0.1, 0.2, 3000)])  # cosine-like
    y = np.concatenate([np.ones(300, bool), np.zeros(3000, bool)])
    q = rng.normal(size=(s.size, 2))
    prior = 0.2
    logit = math.log(prior / (1 - prior))

    def objective(theta: np.ndarray) -> float:
        llr = theta[0] + theta[1] * s + q @ theta[2:]
        return (prior * np.logaddexp(0, -(llr[y] + logit)).mean()
                + (1 - prior) * np.logaddexp(0, llr[~y] + logit).mean())

    ref = minimize(objective, np.zeros(4), method="BFGS", options={"gtol": 1e-12}).x
    cal = fit_calibration(s, y, prior=prior, quality=q, quality_spec=Quality())
    got = np.array([cal.offset, *cal.weights.values()])
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    assert list(cal.weights) == ["score", "log_min_duration", "log_max_duration"]


def test_calibrated_summary_on_well_calibrated_llrs() -> None:
    s, y = gaussian_scores(5000, 50000, mu=1.5, seed=8)
    summary = calibrated_summary(2 * 1.5 * s, y)  # the true LLR: actual DCF close to minimum DCF
    for p in (0.01, 0.05):
        assert summary.act_dcf[p] == pytest.approx(summary.min_dcf[p], abs=0.03)
        assert summary.act_dcf[p] >= summary.min_dcf[p]
    assert summary.min_cllr <= summary.cllr <= summary.min_cllr + 0.01
    d = summary.to_dict()
    assert {"act_dcf_p01", "min_dcf_p01", "act_dcf_p05", "min_dcf_p05", "cllr", "min_cllr", "eer"} <= set(d)
    # badly calibrated (shifted) LLRs: same ranking (min values) but worse actual values
    bad = calibrated_summary(3.0 * s + 4.0, y)
    assert bad.min_dcf == pytest.approx(summary.min_dcf) and bad.min_cllr == pytest.approx(summary.min_cllr)
    assert bad.cllr > summary.cllr + 0.5 and bad.act_dcf[0.01] > summary.act_dcf[0.01] + 0.2


def test_duration_quality_features() -> None:
    durations = {"a": 2.0, "b": 8.0, "c": 45.0}
    q = duration_quality(["a", "c", "b"], ["b", "a", "b"], durations, max_duration=20.0)
    np.testing.assert_allclose(q, np.log([[2.0, 8.0], [2.0, 20.0], [8.0, 8.0]]))
    with pytest.raises(InputError, match="1 trial key.*no duration.*zz"):
        duration_quality(["a"], ["zz"], durations)
    with pytest.raises(UsageError):
        Quality(measure="snr")


def test_quality_recovers_a_duration_dependent_shift() -> None:
    """Trials with a short utterance score lower, targets and non-targets alike (as cosine scores do):
    the true LLR is 2 (s + 0.8 [shorter < 2 s]), which a duration-aware calibration recovers."""
    rng = np.random.default_rng(9)
    n = 40000
    d1 = np.where(rng.random(n) < 0.5, 1.5, 12.0)
    d2 = np.where(rng.random(n) < 0.5, 1.5, 30.0)  # capped at 20 s
    short = np.minimum(d1, d2) < 2.0
    y = rng.random(n) < 0.5
    s = np.where(y, 1.0, -1.0) + rng.normal(size=n) - 0.8 * short
    keys1 = [f"u{i}a" for i in range(n)]
    keys2 = [f"u{i}b" for i in range(n)]
    q = duration_quality(keys1, keys2, {**dict(zip(keys1, d1)), **dict(zip(keys2, d2))})
    np.testing.assert_allclose(q[:, 1], np.log(np.minimum(np.maximum(d1, d2), 20.0)))
    plain = fit_calibration(s, y)
    aware = fit_calibration(s, y, quality=q, quality_spec=Quality())
    assert aware.training["cllr"] < plain.training["cllr"] - 0.02
    # 1.6 [short] = 1.6 (log 12 - log_min) / log 8 where log_min is log 1.5 or log 12 (and log_max says nothing)
    assert aware.weights["score"] == pytest.approx(2.0, abs=0.06)
    assert aware.weights["log_min_duration"] == pytest.approx(-1.6 / math.log(8.0), abs=0.06)
    assert aware.weights["log_max_duration"] == pytest.approx(0.0, abs=0.06)
    assert aware.offset == pytest.approx(1.6 * math.log(12.0) / math.log(8.0), abs=0.15)


def _write_scores(path: Path, k1, k2, scores, labels) -> None:
    path.write_text("".join(f"{a}\t{b}\t{s:.6f}\t{int(t)}\n" for a, b, s, t in zip(k1, k2, scores, labels)))


def demo_scores(demo_files: list[Path]):
    """Cosine scores of mean log-mel vectors (CMN-free) over every pair of the demo utterances."""
    from dasv_cli.dsp.logmel import logmel
    from dasv_cli.io.audio import read_audio

    keys, vecs, durs = [], [], {}
    for f in demo_files:
        wave = read_audio(f).wave
        feats = logmel(np.asarray(wave, dtype=np.float32))
        key = f"{f.parent.name}/{f.stem}"
        keys.append(key)
        vecs.append(np.concatenate([feats.mean(0), feats.std(0)]))
        durs[key] = len(wave) / 16000
    v = np.stack(vecs)
    v = v - v.mean(0)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    k1, k2, sc, lab = [], [], [], []
    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            k1.append(keys[i]); k2.append(keys[j]); sc.append(float(v[i] @ v[j]))
            lab.append(keys[i].split("/")[0] == keys[j].split("/")[0])
    return k1, k2, np.array(sc), np.array(lab), durs


def cli(capsys, *args: str):
    """`dasv ARGS` in this process (the calibrate command is thin; start-up is not what is tested)."""
    from dasv_cli.cli.app import run

    capsys.readouterr()
    code = run(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_real_scores_calibrate_file_roundtrip_and_cli(demo_files, tmp_path, capsys) -> None:
    k1, k2, s, y, durs = demo_scores(demo_files)
    assert y.sum() == 80 and (~y).sum() == 700  # 8 speakers x 5 utterances
    scores = tmp_path / "scores.tsv"
    _write_scores(scores, k1, k2, s, y)
    cal = calibrate_score_file(scores)
    llr = apply_calibration(cal, s)
    summary = calibrated_summary(llr, y)
    assert summary.cllr == pytest.approx(cllr_reference(llr, y), rel=1e-9)
    assert summary.min_cllr == pytest.approx(min_cllr_reference(s, y), rel=1e-9)
    assert summary.min_cllr <= summary.cllr < 1.0  # informative scores, calibrated: better than 1 bit
    assert summary.cllr < cllr(s, y)  # raw cosines as LLRs are worse than calibrated ones
    path = tmp_path / "cal.json"
    save_calibration(cal, path)
    again = load_calibration(path)
    np.testing.assert_allclose(apply_calibration(again, s), llr, rtol=0, atol=1e-12)
    data = json.loads(path.read_text())
    assert data["prior"] == 0.5 and data["trials"] == 780 and data["quality"] is None

    durations = tmp_path / "utt2dur"
    durations.write_text("".join(f"{k}.flac {d:.3f}\n" for k, d in durs.items()))
    code, out, err = cli(capsys, "calibrate", str(scores), "-o", str(tmp_path / "q.json"), "--quality", "duration",
                         "--durations", str(durations), "--prior", "0.1", "--json")
    assert code == 0, err
    assert "Cllr" in err and "actDCF@0.01" in err
    assert json.loads(out) == json.loads((tmp_path / "q.json").read_text())
    qcal = load_calibration(tmp_path / "q.json")
    assert qcal.quality is not None and qcal.prior == 0.1 and list(qcal.weights)[1:] == ["log_min_duration", "log_max_duration"]
    from dasv_cli.io.scores import read_scores

    stored = read_scores(scores)  # the fit saw the scores as the TSV holds them (6 decimals)
    assert stored.key1 == k1 and np.array_equal(stored.labels, y)
    qllr = calibrate_trials(qcal, stored.key1, stored.key2, stored.scores, durations=durations)
    assert calibrated_summary(qllr, y).cllr == pytest.approx(qcal.training["cllr"], rel=1e-9)
    with pytest.raises(UsageError, match="needs the duration quality"):
        apply_calibration(qcal, s)


def test_calibrate_cli_errors(tmp_path, capsys, dasv) -> None:
    unlabelled = tmp_path / "u.tsv"
    unlabelled.write_text("a\tb\t0.5\nc\td\t0.1\n")
    code, _, err = cli(capsys, "calibrate", str(unlabelled), "-o", str(tmp_path / "c.json"))
    assert code == 1 and "no label column" in err
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\t0.5\t1\nc\td\tnope\t0\n")
    res = dasv("calibrate", str(bad), "-o", str(tmp_path / "c.json"))  # one real process: exit code, one line
    assert res.code == 1 and f"{bad}:2:" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    one_class = tmp_path / "one.tsv"
    one_class.write_text("a\tb\t0.5\t1\nc\td\t0.7\t1\n")
    code, _, err = cli(capsys, "calibrate", str(one_class), "-o", str(tmp_path / "c.json"))
    assert code == 1 and "non-target" in err
    good = tmp_path / "good.tsv"
    good.write_text("a\tb\t0.5\t1\nc\td\t0.1\t0\na\td\t0.2\t0\n")
    code, _, err = cli(capsys, "calibrate", str(good), "-o", str(tmp_path / "c.json"), "--quality", "duration")
    assert code == 2 and "--features DIR or --durations FILE" in err
    code, _, err = cli(capsys, "calibrate", str(good), "-o", str(tmp_path / "c.json"), "--durations", str(good))
    assert code == 2 and "--quality duration" in err
    code, _, err = cli(capsys, "calibrate", str(good), "-o", str(tmp_path / "c.json"), "--prior", "1.5")
    assert code == 2 and "--prior" in err
    assert not (tmp_path / "c.json").exists()
    (tmp_path / "broken.json").write_text('{"format": "dasv-calibration", "version": 1}')
    with pytest.raises(InputError, match="broken.json: unusable calibration"):
        load_calibration(tmp_path / "broken.json")
    with pytest.raises(InputError, match="not a dasv calibration"):
        Calibration.from_dict({"offset": 1}, "x.json")


def test_durations_from_a_feature_store_and_from_utt2dur(tmp_path) -> None:
    from dasv_cli.dsp.logmel import LogMelConfig
    from dasv_cli.io.durations import read_durations, store_durations
    from dasv_cli.io.store.lock import StoreLock
    from dasv_cli.io.store.writer import ShardWriter
    from dasv_cli.eval.quality import load_durations

    store = tmp_path / "feats"
    store.mkdir()
    frames = {"spk1/a": 150, "spk1/b": 1234, "spk2/c": 16}
    with StoreLock(store), ShardWriter(store, LogMelConfig().to_dict()) as w:
        for key, n in frames.items():
            w.add(key, np.zeros((n, 80), np.float32), np.zeros(80, np.float32), np.ones(80, np.float32), n * 160 + 240)
    got = store_durations(store)
    assert got == pytest.approx({k: n * 0.01 for k, n in frames.items()})  # frames x 10 ms
    assert load_durations(features=store)[0] == got
    utt2dur = tmp_path / "utt2dur"
    utt2dur.write_text("spk1/a.wav 1.5\n# comment\nspk2/c 0.16\n")
    assert read_durations(utt2dur) == {"spk1/a": 1.5, "spk2/c": 0.16}
    utt2dur.write_text("spk1/a 1.5\nspk1/a 2.0\n")
    with pytest.raises(InputError, match=r"utt2dur:2: duplicate key"):
        read_durations(utt2dur)
    utt2dur.write_text("spk1/a -3\n")
    with pytest.raises(InputError, match=r"utt2dur:1: duration '-3' must be a positive"):
        read_durations(utt2dur)
    with pytest.raises(UsageError, match="one"):
        load_durations(features=store, durations=utt2dur)
