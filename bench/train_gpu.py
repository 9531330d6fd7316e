"""GPU training throughput of `dasv train`, paper config, end to end from HDF5 shards (issue 4).

Prepared for a GPU machine; NOT run in the session that wrote it (no GPU was lent). `--smoke` runs
the same code on the CPU with a tiny config so the script is known to work end to end.

What it measures, per variant (fp32; bf16 + channels_last; bf16 + channels_last + torch.compile):
- end to end: `dasv_cli.train.loop.train` on a feature store (the paper's network: VGG4L K=1024,
  DoubleMHA 32 heads, 400-d, AM-Softmax over 5,994 speakers; Adam; batch 64 x 2 accumulation; random
  3.5 s windows read from the shards by `--workers` loader processes, CMN from stored statistics);
  samples/s is the median over the reports after the warm-up (`train/samples_per_s` in metrics.jsonl);
- model only: the same forward/backward/step on one resident random batch (no data loading), the
  figure to compare with the original code's ~1,000 samples/s.
Target: >= 3,500 samples/s end to end on one H100/H200 (issue 20; the original code's model alone
measured ~1,000 fp32 and ~3,050 bf16 + compile on an H100).

The store is synthetic (random log-mel-like values written with ShardWriter, float16 by default):
throughput does not depend on the values, and the GPU machine has no copy of the speech data.

    python bench/train_gpu.py                  # on the GPU machine (~6-8 min)
    python bench/train_gpu.py --smoke          # anywhere, CPU, ~1 min
    python bench/train_gpu.py --json-out r.json  # the figures also as JSON, rewritten after each variant
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = {
    "fp32": dict(precision="fp32", channels_last=False, compile=False),
    "bf16+cl": dict(precision="bf16", channels_last=True, compile=False),
    "bf16+cl+compile": dict(precision="bf16", channels_last=True, compile=True),
}


def make_store(path: Path, utterances: int, frames: int, num_speakers: int, dtype: str, seed: int = 0) -> Path:
    """A synthetic feature store + labels file (every label 0..N-1 used)."""
    import numpy as np

    from dasv_cli.dsp.logmel import LogMelConfig
    from dasv_cli.io.store.lock import StoreLock
    from dasv_cli.io.store.reader import FeatureStore
    from dasv_cli.io.store.writer import ShardWriter

    labels = path / "labels.txt"
    if labels.exists():
        try:
            if len(FeatureStore(path / "feats")) == utterances:
                return labels
        except Exception:
            pass
    shutil.rmtree(path, ignore_errors=True)
    (path / "feats").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    recipe = LogMelConfig().to_dict()
    t0 = time.time()
    lines = []
    with StoreLock(path / "feats"):
        writer = ShardWriter(path / "feats", recipe, dtype=dtype, shard_frames=2_000_000)
        try:
            for i in range(utterances):
                n = int(frames * rng.uniform(0.7, 1.3))
                feats = (rng.standard_normal((n, 80), dtype=np.float32) * 2.0 + 5.0).astype(np.float32)
                key = f"spk{i % num_speakers:05d}/utt{i:06d}"
                writer.add(key, feats, feats.mean(0), feats.std(0), n * 160)
                lines.append(f"{key} {i % num_speakers}\n")
        finally:
            writer.close()
    labels.write_text("".join(lines))
    print(f"synthetic store: {utterances} utterances x ~{frames} frames ({dtype}) in {time.time() - t0:.1f} s")
    return labels


def model_only(cfg, device: str, steps: int, warmup: int, num_speakers: int) -> float:
    """Samples/s of forward + backward + Adam step on one resident batch (no data loading)."""
    import contextlib

    import torch

    from dasv_cli.train.network import build_model

    torch.manual_seed(0)
    net = build_model(cfg, num_speakers).to(device)
    if cfg.channels_last and device.startswith("cuda"):
        net = net.to(memory_format=torch.channels_last)
    fwd = torch.compile(net) if cfg.compile else net
    opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    x = torch.randn(cfg.batch_size, cfg.window_frames, 80, device=device)
    y = torch.randint(0, net.cfg.num_speakers, (cfg.batch_size,), device=device)
    amp = (torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
           if cfg.precision == "bf16" else contextlib.nullcontext())

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    t0 = None
    for i in range(warmup + steps):
        if i == warmup:
            sync()
            t0 = time.time()
        for _ in range(cfg.grad_accumulation):
            with amp:
                logits = net.logits(fwd(x), y, i)
            torch.nn.functional.cross_entropy(logits.float(), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync()
    return steps * cfg.grad_accumulation * cfg.batch_size / (time.time() - t0)



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny config on the CPU (checks the script, not the speed)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/dasv-bench-train-gpu"))
    ap.add_argument("--utterances", type=int, default=6000)
    ap.add_argument("--frames", type=int, default=600, help="mean frames per synthetic utterance")
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--steps", type=int, default=120, help="updates per end-to-end run (warm-up included)")
    ap.add_argument("--warmup", type=int, default=30, help="updates left out of the end-to-end figure")
    ap.add_argument("--workers", type=int, default=min(12, max(1, (os.cpu_count() or 2) - 2)))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--skip-model-only", action="store_true")
    ap.add_argument("--target", type=float, default=3500.0, help="end-to-end samples/s the paper config should reach")
    ap.add_argument("--json-out", type=Path, default=None,
                    help="write the figures here as JSON after each variant (a run cut short keeps the finished ones)")
    args = ap.parse_args()

    import torch

    from dasv_cli import progress
    from dasv_cli.train.config import TrainConfig
    from dasv_cli.train.loop import train

    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    if device == "cpu" and not args.smoke:
        sys.exit("no CUDA device: run with --smoke to check the script on the CPU")
    net_opts: dict = {}
    if args.smoke:
        args.utterances, args.frames, args.steps, args.warmup = 200, 150, 8, 2
        args.workers = min(args.workers, 1)
        net_opts = dict(kernel_size=16, heads=4, embedding_size=16, window_seconds=1.0, batch_size=8)
        if "bf16+cl+compile" in args.variants and not os.environ.get("DASV_SMOKE_COMPILE"):
            args.variants = [v for v in args.variants if v != "bf16+cl+compile"]
            print("smoke: compile variant skipped on the CPU (set DASV_SMOKE_COMPILE=1 to include it)")
    speakers = 20 if args.smoke else 5994
    labels = make_store(args.work / ("smoke" if args.smoke else "store"), args.utterances, args.frames, speakers,
                        args.dtype)
    progress.set_quiet(True)
    print(f"device: {torch.cuda.get_device_name(0) if device == 'cuda' else 'cpu'}; torch {torch.__version__}; "
          f"loader workers {args.workers}")
    report_every = max(1, min(10, args.steps // 6))
    results = {}
    for name in args.variants:
        out = args.work / f"run-{name}-{int(time.time())}"
        cfg = TrainConfig(train_labels=str(labels), features=str(labels.parent / "feats"), out=str(out),
                          workers=args.workers, max_steps=args.steps, print_every=report_every,
                          save_every=10**9, device=device, **net_opts, **VARIANTS[name])
        t0 = time.time()
        train(cfg)
        wall = time.time() - t0
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        rates = [r["samples_per_s"] for r in rows if "samples_per_s" in r and r["step"] > args.warmup]
        e2e = sorted(rates)[len(rates) // 2] if rates else float("nan")
        mem = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0
        mo = float("nan") if args.skip_model_only else model_only(cfg, device, steps=max(4, args.steps // 4),
                                                                  warmup=max(2, args.warmup // 3), num_speakers=speakers)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        results[name] = {"end_to_end_samples_per_s": e2e, "model_only_samples_per_s": mo,
                         "wall_s": wall, "peak_gib": mem}
        print(f"{name:>16}: end to end {e2e:8.0f} samples/s   model only {mo:8.0f} samples/s   "
              f"(run {wall:.0f} s, peak {mem:.1f} GiB)", flush=True)
        if args.json_out is not None:
            args.json_out.write_text(json.dumps({"device": device, "target": args.target, "results": results}, indent=1))
        shutil.rmtree(out, ignore_errors=True)
    print(json.dumps(results, indent=1))
    if device == "cuda":
        best = max(r["end_to_end_samples_per_s"] for r in results.values())
        print(f"best end to end: {best:.0f} samples/s (target >= {args.target:.0f})")


if __name__ == "__main__":
    main()
