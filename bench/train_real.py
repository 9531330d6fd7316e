"""Real-speech benchmark of `dasv train`: the paper recipe against the modern one, on unseen speakers.

Trains on all 28 speakers of librispeech-train-clean-5-lite and verifies on the 10 speakers of
librispeech-test-other-10x10 that no run ever sees (all 4,950 pairs, 450 same-speaker), for each
recipe and seed, all at the same number of updates; prints the EER and minDCF side by side.

- `paper`: the defaults (AM-Softmax s=30 m=0.4, constant LR, clean utterances only);
- `modern`: `--recipe modern` (SpecAugment; AAM-Softmax s=32 m=0.2 with margin warm-up; Kaiming
  init; LR warm-up + cosine decay), on the clean utterances;
- `--set augmented=true`: a row also trains on the stored copies of a store built with
  `dasv features --augment KINDS --copies K` (default reverb with simulated RIRs, generated coloured
  noise and tone "music", babble of other training speakers, one copy each, see bench/real_data.py);
- `--set KEY=VALUE`: any training option of the row (an ablation: `--set spec_augment=false`).

    python bench/train_real.py --steps 600                    # 2 recipes x 2 seeds
    python bench/train_real.py --steps 600 --recipes paper --seeds 1
    python bench/train_real.py --steps 600 --recipes modern --set augmented=true --augment reverb,noise,music,babble,speed --copies 2
    python bench/train_real.py --steps 50 --seeds 1           # measure the rate first
    python bench/train_real.py --steps 1500 --recipes modern --online reverb,noise,music,babble --no-augment

`--online KINDS`: the runs train with `--online-augment KINDS` (each window augmented afresh) on a
store that keeps the waveforms (`dasv features --keep-audio`), with waveform stores (`--audio-only`)
of the generated noise/music (bench/real_data.write_sources) and of `--rirs` simulated RIRs, instead
of the stored copies (the row is labelled RECIPE+online-KINDS).

Each finished run is kept as OUT/results/RECIPE-seedS-STEPS-kK.json (RECIPE+AUGMENTATION for a
recipe that trains on the copies), so runs can be done one at a time
(or in parallel processes) and the table is printed from all runs of this size. The network is the
issue's CPU-sized stand-in (VGG4L K=128, 8 heads, 128-d embedding, 2 s windows, batch 32, Adam 1e-3);
`--kernel-size` makes it smaller when the machine is slow, the same for every recipe.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def shared_data() -> Path:
    env = os.environ.get("DASV_SHARED_DATA")
    for c in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data", Path("/work/shared/data")]:
        if (c / "librispeech-train-clean-5-lite").is_dir() and (c / "librispeech-test-other-10x10").is_dir():
            return c
    sys.exit("../shared/data with librispeech-train-clean-5-lite and librispeech-test-other-10x10 not found "
             "(set DASV_SHARED_DATA)")


def trains_on_copies(recipe: str, sets: dict) -> bool:
    """Whether a row trains on the stored copies: `--set augmented=true`, or a recipe that presets it."""
    from dasv_cli.train.recipe import recipe_values

    return bool(sets.get("augmented", recipe_values(recipe, 1).get("augmented", False)))


def parse_sets(items: list[str]) -> dict:
    """`--set spec_augment=false --set margin_type=am`: option overrides for an ablation row."""
    out = {}
    for item in items:
        key, _, text = item.partition("=")
        low = text.lower()
        value = {"true": True, "false": False}.get(low, text)
        if isinstance(value, str):
            for kind in (int, float):
                try:
                    value = kind(text)
                    break
                except ValueError:
                    pass
        out[key.strip().replace("-", "_")] = value
    return out


def run_one(data: dict, args, recipe: str, seed: int) -> dict:
    from dasv_cli.train.config import resolve_config
    from dasv_cli.train.loop import train

    sets = parse_sets(args.set)
    label, feats = recipe, data["feats"]
    if trains_on_copies(recipe, sets) and data.get("augmented") is not None and "online" not in data:
        label, feats = f"{recipe}+{data['augmented'].name.removeprefix('feats-')}", data["augmented"]
        sets = {k: v for k, v in sets.items() if k != "augmented"}
    if "online" in data:  # waveforms augmented afresh replace the copies
        label = f"{recipe}+online-{args.online.replace(',', '+')}-p{args.augment_prob:g}"
        feats = data["online"]["feats"]
    if sets:
        label += "".join(f" {k}={v}" for k, v in sets.items())
    if feats == data.get("augmented"):
        sets["augmented"] = True
    if "online" in data:
        sets = {"augmented": False, "online_augment": args.online, "augment_prob": args.augment_prob,
                "noise_store": str(data["online"]["noise"]), "rir_store": str(data["online"]["rirs"]), **sets}
    out = args.work / "runs" / f"{label}-seed{seed}-{args.steps}-{int(time.time())}"
    flags = dict(train_labels=str(data["labels"]), features=str(feats), valid_trials=str(data["trials"]),
                 recipe=recipe, kernel_size=args.kernel_size, heads=8, embedding_size=128, window_seconds=2.0,
                 batch_size=32, grad_accumulation=1, learning_rate=1e-3, print_every=max(1, args.steps // 10),
                 validate_every=max(1, args.steps // args.validations), save_every=10**6, workers=args.workers,
                 max_steps=args.steps, early_stopping=-1, seed=seed, out=str(out.with_name(out.name.replace(" ", "_"))))
    flags.update(sets)
    out = Path(flags["out"])
    cfg, _ = resolve_config(flags, cwd=args.work)
    t0 = time.time()
    result = train(cfg)
    wall = time.time() - t0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    curve = [(r["step"], r["eer"], r["min_dcf_p01"], r["min_dcf_p05"]) for r in rows if "eer" in r]
    sps = [r["samples_per_s"] for r in rows if "samples_per_s" in r][1:]
    last = curve[-1]
    best = min(curve, key=lambda c: c[1])
    record = {"recipe": label, "seed": seed, "steps": result.step, "eer": last[1], "min_dcf_p01": last[2],
              "best_eer": best[1], "best_step": best[0], "best_min_dcf_p01": best[2],
              "min_dcf_p05": last[3], "curve": curve, "minutes": wall / 60,
              "samples_per_s": statistics.median(sps) if sps else None, "kernel_size": args.kernel_size}
    print(f"{label} seed {seed}: {result.step} updates in {wall / 60:.1f} min; EER {last[1]:.2f}%  "
          f"minDCF(0.01) {last[2]:.3f}  minDCF(0.05) {last[3]:.3f}; curve {[(s, round(e, 2)) for s, e, *_ in curve]}",
          flush=True)
    return record


def online_stores(work: Path, jobs: int, rirs: int, seed: int = 0) -> dict:
    """--online: the training and test audio with waveforms kept, and waveform stores of the generated
    noise/music and of `rirs` simulated RIRs (each cached in WORK: a rerun skips what is stored)."""
    from bench.real_data import write_sources
    from dasv_cli.augment.rirset import write_rirs
    from dasv_cli.features.run import featurize

    sources = write_sources(work / "sources")
    rir_dir = work / f"rirs-{rirs}-seed{seed}"
    write_rirs(rir_dir, rirs, seed=seed)
    out = {"feats": work / "feats-audio", "noise": work / "noise-store", "rirs": work / f"rir-store-{rirs}"}
    featurize(work / "audio.lst", out["feats"], jobs=jobs, progress=False, content="features+audio")
    for name, root in (("noise", sources), ("rirs", rir_dir)):
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.wav"))
        (work / f"{name}-store.lst").write_text("".join(f"{f}\n" for f in files))
        featurize(work / f"{name}-store.lst", out[name], audio_dir=root, jobs=jobs, progress=False, content="audio")
    return out


def table(results: list[dict]) -> str:
    """Markdown: one row per run, then mean per recipe."""
    lines = ["| recipe | seed | updates | EER % | minDCF(0.01) | minDCF(0.05) | minutes |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (r["recipe"], r["seed"])):
        lines.append(f"| {r['recipe']} | {r['seed']} | {r['steps']} | {r['eer']:.2f} | {r['min_dcf_p01']:.3f} | "
                     f"{r['min_dcf_p05']:.3f} | {r['minutes']:.1f} |")
    for recipe in sorted({r["recipe"] for r in results}):
        rs = [r for r in results if r["recipe"] == recipe]
        mean = lambda k: statistics.fmean(r[k] for r in rs)  # noqa: E731
        lines.append(f"| **{recipe} mean** | {len(rs)} seeds | {rs[0]['steps']} | **{mean('eer'):.2f}** | "
                     f"{mean('min_dcf_p01'):.3f} | {mean('min_dcf_p05'):.3f} | |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1500, help="updates per run (the same for every recipe)")
    ap.add_argument("--recipes", nargs="+", default=["paper", "modern"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--kernel-size", type=int, default=128)
    ap.add_argument("--validations", type=int, default=4, help="EER measurements per run (the last at the end)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/dasv-bench-recipes"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--no-augment", action="store_true", help="do not make the augmented copies (paper runs only)")
    ap.add_argument("--augment", default="reverb,noise,music,babble", metavar="KINDS",
                    help="the copies the recipes with --augmented train on (`dasv features --augment KINDS`)")
    ap.add_argument("--copies", type=int, default=1, metavar="K", help="copies per kind (`--copies K`)")
    ap.add_argument("--rirs", type=int, default=200, help="simulated RIRs for reverb (`dasv rirs --count N`)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a training option (an ablation row): --set spec_augment=false")
    ap.add_argument("--online", default=None, metavar="KINDS",
                    help="train with --online-augment KINDS on waveform stores (see the docstring)")
    ap.add_argument("--augment-prob", type=float, default=0.6, help="--augment-prob of the --online runs")
    args = ap.parse_args()

    import torch

    from bench.real_data import augment, prepare
    from dasv_cli import progress

    torch.set_num_threads(args.threads)
    progress.set_quiet(True)
    src = shared_data()
    data = prepare(src / "librispeech-train-clean-5-lite", src / "librispeech-test-other-10x10", args.work, args.threads)
    if not args.no_augment:
        data["augmented"] = augment(data, args.work, args.augment, args.copies, jobs=args.threads, rirs=args.rirs)
    if args.online:
        data["online"] = online_stores(args.work, args.threads, args.rirs)
    results_dir = args.work / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    os.system("uptime")
    for seed in args.seeds:
        for recipe in args.recipes:
            record = run_one(data, args, recipe, seed)
            name = record["recipe"].replace(" ", "_").replace("=", "-")
            (results_dir / f"{name}-seed{seed}-{args.steps}-k{args.kernel_size}.json").write_text(
                json.dumps(record))
    results = [json.loads(p.read_text()) for p in sorted(results_dir.glob(f"*-{args.steps}-k{args.kernel_size}.json"))]
    print(f"\n{len(results)} runs of {args.steps} updates (K={args.kernel_size}); verification on 10 unseen "
          f"speakers, 4,950 trials:\n" + table(results))
    os.system("uptime")


if __name__ == "__main__":
    main()
