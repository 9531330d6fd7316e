"""Time dasv's exact metrics on 10 M trials beside the original tool's grid method on 20,000 trials.

The original research tool computed EER on a fixed threshold grid (-1..1, step 0.01) counting each
rate with a Python loop over every score, per threshold (`Score` / `__calculate_EER` in its
train.py); it is reimplemented below, as it was, only for this comparison.

    python bench/metrics.py                 # 10 M trials, 5 runs; grid method on 20,000 trials, 3 runs
    python bench/metrics.py --trials 1000000 --runs 3

Prints medians (seconds) and the EERs each method reports, so the precision gap shows too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dasv_cli.eval.metrics import compute_metrics  # noqa: E402


def _score_rate(scores, th, rate):
    """The original `Score`: percent of scores over (FAR) or under (FRR) a threshold, in a Python loop."""
    count = 0.0
    for sc in scores:
        if rate == "FAR":
            if float(sc) >= float(th):
                count += 1
        elif rate == "FRR":
            if float(sc) < float(th):
                count += 1
    return round(count * 100 / float(len(scores)), 4)


def original_grid_eer(clients, impostors) -> float:
    """The original `__calculate_EER`: 200 thresholds, first sign change of FAR - FRR, else 50 %."""
    thresholds = np.arange(-1, 1, 0.01)
    frr, far = np.zeros(len(thresholds)), np.zeros(len(thresholds))
    for idx, th in enumerate(thresholds):
        frr[idx] = _score_rate(clients, th, "FRR")
        far[idx] = _score_rate(impostors, th, "FAR")
    eer_idx = np.argwhere(np.diff(np.sign(far - frr)) != 0).reshape(-1)
    if len(eer_idx) > 0:
        i = int(eer_idx[0])
        return round((far[i] + frr[i]) / 2, 4)
    return 50.0


def cosine_like(rng: np.random.Generator, n: int, target_fraction: float = 0.5):
    """Scores in [-1, 1] shaped like cosine scores: targets around 0.6, non-targets around 0.1."""
    labels = rng.random(n) < target_fraction
    scores = np.where(labels, rng.normal(0.6, 0.15, n), rng.normal(0.1, 0.15, n))
    return np.clip(scores, -1.0, 1.0), labels


def median_time(fn, runs: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--grid-trials", type=int, default=20_000)
    ap.add_argument("--grid-runs", type=int, default=3)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}  cpus: {os.cpu_count()}")

    scores, labels = cosine_like(rng, args.trials)
    t_big, m_big = median_time(lambda: compute_metrics(scores, labels), args.runs)
    print(f"dasv exact metrics, {args.trials:,} trials (EER + minDCF@0.01 + minDCF@0.05): "
          f"median {t_big:.3f} s over {args.runs} runs  EER {m_big.eer:.4f}%  "
          f"minDCF@0.01 {m_big.min_dcf_p01:.4f}  minDCF@0.05 {m_big.min_dcf_p05:.4f}")

    s_small, y_small = cosine_like(rng, args.grid_trials)
    clients, impostors = list(s_small[y_small]), list(s_small[~y_small])
    t_grid, eer_grid = median_time(lambda: original_grid_eer(clients, impostors), args.grid_runs)
    t_exact, m_small = median_time(lambda: compute_metrics(s_small, y_small), max(args.runs, 5))
    print(f"original grid method, {args.grid_trials:,} trials (EER only): median {t_grid:.3f} s over "
          f"{args.grid_runs} runs  EER {eer_grid:.4f}%")
    print(f"dasv exact metrics, {args.grid_trials:,} trials: median {t_exact * 1000:.2f} ms  "
          f"EER {m_small.eer:.4f}%  ({t_grid / t_exact:,.0f}x faster than the grid method)")
    per_trial_grid = t_grid / args.grid_trials
    print(f"grid method extrapolated to {args.trials:,} trials: ~{per_trial_grid * args.trials:,.0f} s")

    # The grid's blind spot: scores that all lie above 0.99 (e.g. a collapsed model).
    y_hi = rng.random(2000) < 0.5
    hi = np.where(y_hi, 0.994 + 0.005 * rng.random(2000), 0.991 + 0.005 * rng.random(2000))
    print(f"all scores above 0.99: grid method says {original_grid_eer(list(hi[y_hi]), list(hi[~y_hi])):.2f}%, "
          f"exact EER {compute_metrics(hi, y_hi).eer:.2f}%")


if __name__ == "__main__":
    main()
