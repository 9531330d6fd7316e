"""How far apart two rows of a training table must be to mean anything: EER with a speaker bootstrap.

bench/train_real.py verifies on 10 unseen speakers (100 utterances, 4,950 trials). Trials that share
a speaker are not independent, so the binomial error of 450 target trials understates the spread;
this resamples the *speakers* (with replacement, B times), keeps the trials among the drawn ones
(a speaker drawn twice brings its trials twice; pairs of a speaker with its own copy are not made),
and reports the EER's 5th-95th percentile interval, and the interval of each run's EER minus the
first run's on the same resamples (paired, so the draw of speakers cancels): a difference whose
interval straddles 0 is not shown by this test set.

    python bench/eer_ci.py RUN_DIR [RUN_DIR ...] --features /tmp/dasv-bench/feats --trials /tmp/dasv-bench/trials.txt
    python bench/eer_ci.py /tmp/dasv-bench/runs/* --which last --boot 1000

Each RUN_DIR's last.pt (or best.pt with --which best) embeds the trial utterances once; speakers
are the trial keys' second path component (`test/<speaker>/<utterance>` as bench/real_data.py writes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def speaker_of(key: str) -> str:
    parts = key.split("/")
    return parts[1] if len(parts) > 2 else parts[0]


def scores_of(ckpt: Path, features: Path, key1: list[str], key2: list[str]) -> np.ndarray:
    """Cosine score of each trial with the checkpoint's embeddings (each utterance embedded once)."""
    from dasv_cli.eval.embed import checkpoint_norm, embed_store, load_extractor
    from dasv_cli.io.store.reader import FeatureStore

    model, meta = load_extractor(ckpt, "cpu")
    keys = sorted(set(key1) | set(key2))
    with FeatureStore(features) as store:
        vectors = embed_store(model, store, keys, checkpoint_norm(meta), "cpu", progress=False)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    row = {k: i for i, k in enumerate(keys)}
    a = vectors[[row[k] for k in key1]]
    b = vectors[[row[k] for k in key2]]
    return np.einsum("ij,ij->i", a, b)


def resample_weights(spk1: np.ndarray, spk2: np.ndarray, boot: int, seed: int = 0):
    """Per speaker resample (with replacement): each trial's multiplicity in it (a trial between
    speakers i and j drawn c_i and c_j times appears c_i * c_j times; a same-speaker trial c_i times)."""
    n = int(max(spk1.max(), spk2.max())) + 1
    rng = np.random.default_rng(seed)
    for _ in range(boot):
        counts = np.bincount(rng.integers(0, n, n), minlength=n)
        yield np.where(spk1 == spk2, counts[spk1], counts[spk1] * counts[spk2])


def bootstrap_eers(all_scores: list[np.ndarray], labels: np.ndarray, spk1: np.ndarray, spk2: np.ndarray,
                   boot: int, seed: int = 0) -> np.ndarray:
    """[resamples, runs] EER % of every run on the same speaker resamples (paired: the difference of
    two runs on one resample is free of which speakers happened to be drawn)."""
    from dasv_cli.eval.metrics import compute_metrics

    out = []
    for weight in resample_weights(spk1, spk2, boot, seed):
        keep = weight > 0
        if not keep.any() or labels[keep].min() == labels[keep].max():
            continue
        idx = np.repeat(np.flatnonzero(keep), weight[keep])
        out.append([compute_metrics(scores[idx], labels[idx]).eer for scores in all_scores])
    return np.asarray(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--features", type=Path, default=Path("/tmp/dasv-bench/feats"))
    ap.add_argument("--trials", type=Path, default=Path("/tmp/dasv-bench/trials.txt"))
    ap.add_argument("--which", choices=["last", "best"], default="last")
    ap.add_argument("--boot", type=int, default=1000)
    args = ap.parse_args()

    import torch

    from dasv_cli import progress
    from dasv_cli.io.lists import read_trials

    torch.set_num_threads(1)
    progress.set_quiet(True)
    trials = read_trials(args.trials)
    labels = np.asarray(trials.labels, dtype=np.int64)
    names = sorted({speaker_of(k) for k in trials.key1 + trials.key2})
    index = {s: i for i, s in enumerate(names)}
    spk1 = np.array([index[speaker_of(k)] for k in trials.key1])
    spk2 = np.array([index[speaker_of(k)] for k in trials.key2])
    print(f"{len(trials)} trials, {len(names)} speakers, {args.boot} speaker resamples; {args.which}.pt")
    runs = [run for run in args.runs if (run / f"{args.which}.pt").is_file()]
    all_scores = [scores_of(run / f"{args.which}.pt", args.features, trials.key1, trials.key2) for run in runs]
    from dasv_cli.eval.metrics import compute_metrics

    eers = bootstrap_eers(all_scores, labels, spk1, spk2, args.boot)
    print(f"| run | EER % | 90 % interval | minus {runs[0].name}: 90 % interval (paired) |\n|---|---|---|---|")
    for k, run in enumerate(runs):
        full = compute_metrics(all_scores[k], labels).eer
        lo, hi = np.percentile(eers[:, k], [5, 95])
        dlo, dhi = np.percentile(eers[:, k] - eers[:, 0], [5, 95])
        print(f"| {run.name} | {full:.2f} | {lo:.2f} - {hi:.2f} | {dlo:+.2f} .. {dhi:+.2f} |", flush=True)


if __name__ == "__main__":
    main()
