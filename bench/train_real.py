"""Real-speech training benchmark for `dasv train` (issue 4), on the CPU, for a fixed time budget.

Trains a small DoubleMHA network on 20 speakers of librispeech-train-clean-5-lite and validates on
trials built from the other 8 speakers (target pairs: same speaker, different chapters; non-target
pairs: every cross-speaker pair), once per model numerics (`paper`, `original`). Prints the EER curve
over updates, the training samples/s, and the data loader's own samples/s (which must be at least 3x
the training rate so the model never waits for data).

    python bench/train_real.py                       # ~5 min per numerics, features cached in /tmp
    python bench/train_real.py --minutes 1 --numerics paper
    python bench/train_real.py --steps 400            # same updates for both numerics: comparable EERs

The small config (K=64, 8 heads, 128-d embedding, 2 s windows, batch 32, lr 1e-3) is a CPU-sized
stand-in for the paper's (K=1024, 32 heads, 400-d, 3.5 s, batch 64x2, lr 1e-4); the code path is the
same one `dasv train` runs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def shared_data() -> Path:
    env = os.environ.get("DASV_SHARED_DATA")
    for c in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data", Path("/work/shared/data")]:
        if (c / "librispeech-train-clean-5-lite").is_dir():
            return c / "librispeech-train-clean-5-lite"
    sys.exit("librispeech-train-clean-5-lite not found (set DASV_SHARED_DATA)")


def prepare(work: Path, jobs: int) -> tuple[Path, Path, Path, int, int]:
    """Features for all 688 files (cached), train labels for 20 speakers, trials for the other 8."""
    from dasv_cli.features.run import featurize

    src = shared_data()
    work.mkdir(parents=True, exist_ok=True)
    rel = sorted(str(p.relative_to(src)) for p in src.glob("*/*.flac"))
    (work / "audio.lst").write_text("".join(r + "\n" for r in rel))
    t0 = time.time()
    featurize(work / "audio.lst", work / "feats", audio_dir=src, jobs=jobs, progress=False)
    print(f"features: {len(rel)} files in {work / 'feats'} ({time.time() - t0:.1f} s, cached after the first run)")
    keys = [r.rsplit(".", 1)[0] for r in rel]
    chapters: dict[str, set] = {}
    for k in keys:
        spk, chap = k.split("/")[1].split("-")[:2]
        chapters.setdefault(spk, set()).add(chap)
    # Only speaker 1088 has more than one chapter in this subset: it is kept for validation, so that
    # at least some target pairs cross chapters; the other 7 validation speakers are the lowest ids.
    ordered = sorted(chapters, key=lambda s: (-len(chapters[s]), int(s)))
    valid_spk = set(ordered[:8])
    train_spk = set(chapters) - valid_spk
    train_keys = [k for k in keys if k.split("/")[0] in train_spk]
    (work / "labels.txt").write_text("".join(f"{k} spk{k.split('/')[0]}\n" for k in train_keys))
    valid_keys = [k for k in keys if k.split("/")[0] in valid_spk]
    lines, cross, same_chapter, nontargets = [], 0, 0, 0
    for a, b in itertools.combinations(valid_keys, 2):
        sa, ca = a.split("/")[1].split("-")[:2]
        sb, cb = b.split("/")[1].split("-")[:2]
        if sa == sb:
            if ca != cb:
                cross += 1
            elif len(chapters[sa]) > 1:
                continue  # a speaker with several chapters: only cross-chapter targets
            else:
                same_chapter += 1
            lines.append(f"1 {a} {b}\n")
        else:
            lines.append(f"0 {a} {b}\n")
            nontargets += 1
    (work / "trials.txt").write_text("".join(lines))
    targets = cross + same_chapter
    print(f"train: {len(train_keys)} utterances of {len(train_spk)} speakers; validation: {len(valid_keys)} utterances "
          f"of {len(valid_spk)} speakers ({', '.join(sorted(valid_spk, key=int))}): {targets} target trials "
          f"({cross} across chapters; {same_chapter} within the single chapter of speakers that have only one) "
          f"+ {nontargets} non-target trials")
    return work / "feats", work / "labels.txt", work / "trials.txt", targets, nontargets


def loader_rate(cfg, seconds: float) -> float:
    """Samples/s of the data loader alone (same workers, windows and normalisation as training)."""
    from dasv_cli.train.inputs import prepare_data
    from dasv_cli.train.windows import WindowBatchSampler, WindowDataset, make_loader

    data = prepare_data(cfg)
    ds = WindowDataset(cfg.features, data.keys, data.labels, data.lengths, cfg.norm)
    sampler = WindowBatchSampler(data.lengths, cfg.batch_size, cfg.window_frames, cfg.seed)
    loader = make_loader(ds, sampler, cfg.workers, cfg.seed, 0)
    n, epoch, t0 = 0, 0, None
    while True:
        sampler.set_epoch(epoch)
        for feats, _ in loader:
            if t0 is None:  # start the clock after the workers are up
                t0 = time.time()
                continue
            n += feats.shape[0]
            if time.time() - t0 > seconds:
                it = loader._iterator
                if it is not None:
                    it._shutdown_workers()
                return n / (time.time() - t0)
        epoch += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0, help="training budget per numerics")
    ap.add_argument("--steps", type=int, default=0,
                    help="a fixed number of updates instead of a time budget (EER curves then do not depend on load)")
    ap.add_argument("--numerics", nargs="+", default=["paper", "original"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/dasv-bench-train-real"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--validate-every", type=int, default=40)
    args = ap.parse_args()

    import torch

    from dasv_cli import progress
    from dasv_cli.train.config import TrainConfig
    from dasv_cli.train.loop import train

    torch.set_num_threads(args.threads)
    progress.set_quiet(True)
    feats, labels, trials, _, _ = prepare(args.work, jobs=args.threads)
    base = dict(train_labels=str(labels), features=str(feats), valid_trials=str(trials), kernel_size=64, heads=8,
                embedding_size=128, window_seconds=2.0, batch_size=32, grad_accumulation=1, learning_rate=1e-3,
                print_every=10, validate_every=args.validate_every, save_every=100000, workers=args.workers,
                max_minutes=0.0 if args.steps else args.minutes, max_steps=args.steps, early_stopping=-1)
    rate = loader_rate(TrainConfig(**base, out=str(args.work / "unused")), seconds=15)
    print(f"data loader alone: {rate:.0f} samples/s ({args.workers} worker(s), 2 s windows, CMN)")
    os.system("uptime")
    summary = {}
    for numerics in args.numerics:
        out = args.work / f"run-{numerics}-{int(time.time())}"
        cfg = TrainConfig(**base, numerics=numerics, out=str(out))
        t0 = time.time()
        result = train(cfg)
        wall = time.time() - t0
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        sps = [r["samples_per_s"] for r in rows if "samples_per_s" in r][1:]  # first window includes start-up
        train_rate = sorted(sps)[len(sps) // 2] if sps else float("nan")
        curve = [(r["step"], r["eer"], r["min_dcf_p01"]) for r in rows if "eer" in r]
        losses = [(r["step"], r["loss"], r["accuracy"]) for r in rows if "loss" in r]
        print(f"\nnumerics={numerics}: {result.step} updates in {wall / 60:.1f} min, stopped by {result.reason}; "
              f"training {train_rate:.1f} samples/s (median of {len(sps)} reports); loader/training = "
              f"{rate / train_rate:.1f}x")
        print("  step   EER%   minDCF(0.01)   | train loss  acc%")
        by_step = {s: (l, a) for s, l, a in losses}
        for step, eer, dcf in curve:
            loss, acc = by_step.get(step, (float("nan"), float("nan")))
            print(f"  {step:5d}  {eer:6.2f}  {dcf:8.3f}       | {loss:8.3f}  {acc:5.1f}")
        summary[numerics] = {"steps": result.step, "final_eer": curve[-1][1] if curve else None,
                             "best_eer": result.best_eer, "train_samples_per_s": train_rate,
                             "loader_samples_per_s": rate}
    print("\nsummary:", json.dumps(summary, indent=1))
    os.system("uptime")


if __name__ == "__main__":
    main()
