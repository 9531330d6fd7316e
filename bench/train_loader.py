"""Where a training example's time goes on the CPU: the window path, the loader, the train loop, `dasv train`.

    python bench/store_scale.py build /tmp/store --n 20000 --min-frames 200 --max-frames 800
    python bench/train_loader.py /tmp/store --workers 2 --repeat 3

Against a store built by bench/store_scale.py (its labels file beside it), each figure the median of
--repeat runs, with CPU seconds and the load average (the machine may be shared):
- breakdown: one process, warm page cache, WindowDataset.__getitems__ on --batch-size windows of
  --window frames; windows/s by wall and per CPU-second, and microseconds per window by stage from
  cProfile (the profiler inflates the Python parts; the unprofiled rates are the figures that count);
- plan: the epoch plan (permutation, window offsets: vectorised RNG) and iterating the sampler;
- loader: samples/s through make_loader with --workers processes, the main process only receiving;
- loop: `dasv train`'s loop in this process (Trainer, GuardedUpdates, Adam on the tiny network's
  parameters) with the network's forward replaced by the AM-Softmax layer over a slice of each
  window's mean: what the loop and loader cost per step, the ceiling a faster network could reach;
- train: `python -m dasv_cli train` end to end with the tiny network (--net), --workers loaders;
  samples/s from its metrics.jsonl (median of the reports after the first, which holds start-up).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TINY_NET = "--kernel-size 16 --heads 4 --embedding-size 16"  # tests/conftest.py's TINY network


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _warm(directory: str) -> None:
    """Read every shard once, so the figures are of a warm page cache (what an epoch after the first sees)."""
    for p in sorted(Path(directory).glob("shard-*.h5")):
        with open(p, "rb") as fh:
            while fh.read(1 << 24):
                pass


def _dataset(directory: str, norm: str):
    from dasv_cli.io.store.reader import FeatureStore
    from dasv_cli.train.windows import WindowDataset

    store = FeatureStore(directory)
    keys = store.keys()
    rows = store.rows(keys)
    lengths = store.row_lengths(rows)
    return WindowDataset(directory, keys, np.zeros(len(keys), np.int64), lengths, norm, store=store, rows=rows), lengths


STAGES = {  # cProfile function names -> stage
    "preadv": "read syscalls (feats + stats preadv)", "pread": "read syscalls (feats + stats preadv)",
    "copy_": "float16 -> float32", "astype": "float16 -> float32",
    "sub_": "normalise", "div_": "normalise", "normalise": "normalise",
    "batch_tensor": "batch allocation", "empty": "batch allocation",
}


def breakdown(args: argparse.Namespace) -> dict:
    from dasv_cli.train.windows import WindowBatchSampler

    ds, lengths = _dataset(args.store, args.norm)
    plan = list(WindowBatchSampler(lengths, args.batch_size, args.window, seed=1))
    ds.__getitems__(plan[0])
    wall, cpu = [], []
    for r in range(args.repeat):
        chunk = plan[1 + r * args.batches:1 + (r + 1) * args.batches]
        t0, c0 = time.perf_counter(), time.process_time()
        for items in chunk:
            ds.__getitems__(items)
        n = len(chunk) * args.batch_size
        wall.append(n / (time.perf_counter() - t0))
        cpu.append(n / (time.process_time() - c0))
    prof = cProfile.Profile()
    chunk = plan[1:1 + args.batches]
    prof.enable()
    for items in chunk:
        ds.__getitems__(items)
    prof.disable()
    stats = pstats.Stats(prof).stats
    total = sum(tt for (_, _, tt, _, _) in stats.values())
    per: dict[str, float] = {}
    for (_, _, func), (_, _, tt, _, _) in stats.items():
        stage = next((v for k, v in STAGES.items() if func == k or func.endswith(f".{k}>") or f"'{k}'" in func),
                     "Python + numpy bookkeeping (index math, handles, slices, tiling)")
        per[stage] = per.get(stage, 0.0) + tt
    n = len(chunk) * args.batch_size
    ds.close()
    return {"windows_per_s_wall": round(statistics.median(wall)), "windows_per_cpu_s": round(statistics.median(cpu)),
            "runs_wall": [round(x) for x in wall],
            "us_per_window_profiled": {k: round(v / n * 1e6, 1) for k, v in sorted(per.items(), key=lambda kv: -kv[1])},
            "us_per_window_profiled_total": round(total / n * 1e6, 1)}


def plan_costs(args: argparse.Namespace, lengths: np.ndarray) -> dict:
    from dasv_cli.train.windows import WindowBatchSampler, epoch_plan

    times = []
    for r in range(args.repeat):
        t0 = time.perf_counter()
        epoch_plan(lengths, args.batch_size, args.window, 1, r)
        times.append(time.perf_counter() - t0)
    sampler = WindowBatchSampler(lengths, args.batch_size, args.window, seed=1)
    t0 = time.perf_counter()
    batches = sum(1 for _ in sampler)
    it_s = time.perf_counter() - t0
    return {"utterances": int(lengths.size), "epoch_plan_ms": round(statistics.median(times) * 1e3, 1),
            "sampler_us_per_batch": round(it_s / max(batches, 1) * 1e6, 1)}


def _worker_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loader(args: argparse.Namespace) -> dict:
    from dasv_cli.train.loader import make_loader
    from dasv_cli.train.windows import WindowBatchSampler

    runs = []
    for r in range(args.repeat):
        ds, lengths = _dataset(args.store, args.norm)
        sampler = WindowBatchSampler(lengths, args.batch_size, args.window, seed=1)
        sampler.set_epoch(r)
        loader = make_loader(ds, sampler, args.workers, seed=1, rank=0)
        it = iter(loader)
        for _ in range(8):  # workers started and prefetching
            next(it)
        pids = [w.pid for w in getattr(loader._iterator, "_workers", [])]
        w0 = [_worker_cpu(p) for p in pids]
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(args.batches):
            next(it)
        wall = time.perf_counter() - t0
        runs.append({"samples_per_s": args.batches * args.batch_size / wall,
                     "main_cpu_ms_per_batch": (time.process_time() - c0) / args.batches * 1e3,
                     "worker_cpu_s": [round(_worker_cpu(p) - c, 2) for p, c in zip(pids, w0)], "wall_s": wall})
        if hasattr(loader._iterator, "_shutdown_workers"):
            loader._iterator._shutdown_workers()
        ds.close()
    best = statistics.median(x["samples_per_s"] for x in runs)
    return {"workers": args.workers, "samples_per_s": round(best), "runs": [round(x["samples_per_s"]) for x in runs],
            "main_cpu_ms_per_batch": round(statistics.median(x["main_cpu_ms_per_batch"] for x in runs), 2),
            "worker_cpu_per_window_us": round(statistics.median(
                sum(x["worker_cpu_s"]) / (args.batches * args.batch_size) * 1e6 for x in runs), 1)}


def _train_cfg(args: argparse.Namespace, out: str):
    from dasv_cli.train.config import TrainConfig

    net = args.net.split()
    values = {net[i].lstrip("-").replace("-", "_"): int(net[i + 1]) if net[i + 1].isdigit() else net[i + 1]
              for i in range(0, len(net), 2)}
    cfg = TrainConfig(train_labels=args.labels, features=args.store, out=out, batch_size=args.batch_size,
                      window_seconds=args.window / 100, workers=args.workers, max_steps=args.steps,
                      print_every=args.print_every, save_every=10 ** 9, norm=args.norm, **values)
    cfg.check()
    return cfg


def _reports(out: str) -> list[float]:
    lines = Path(out, "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["samples_per_s"] for x in lines if "samples_per_s" in x]


def loop(args: argparse.Namespace) -> dict:
    import torch

    from dasv_cli.train.loop import Trainer, train

    class NoNetwork(Trainer):
        """The loop without the network's forward: AM-Softmax logits over a slice of each window's mean."""

        def compute_logits(self, feats, labels):
            return self.model.logits(feats.mean(dim=1)[:, :self.model.cfg.embedding_size], labels, self.state.step)

    torch.set_num_threads(1)
    runs = []
    for _ in range(args.repeat):
        out = tempfile.mkdtemp(prefix="dasv-loop-")
        try:
            c0, k0, t0 = time.process_time(), _cpu_children(), time.perf_counter()
            train(_train_cfg(args, out), trainer_cls=NoNetwork)
            wall = time.perf_counter() - t0
            reports = _reports(out)[1:]
            runs.append({"samples_per_s": statistics.median(reports), "wall_s": wall,
                         "main_cpu_s": time.process_time() - c0, "workers_cpu_s": _cpu_children() - k0})
        finally:
            shutil.rmtree(out, ignore_errors=True)
    return _summary(runs, args)


def _summary(runs: list[dict], args: argparse.Namespace) -> dict:
    med = statistics.median(x["samples_per_s"] for x in runs)
    samples = args.steps * 2 * args.batch_size
    return {"workers": args.workers, "steps": args.steps, "samples_per_s": round(med, 1),
            "runs": [round(x["samples_per_s"], 1) for x in runs],
            "ms_per_batch": round(args.batch_size / med * 1e3, 2),
            "wall_s": round(statistics.median(x["wall_s"] for x in runs), 1),
            "cpu_s": {k: round(statistics.median(x[k] for x in runs), 1) for k in runs[0] if k.endswith("cpu_s")},
            "cpu_ms_per_sample": round(statistics.median(
                sum(v for k, v in x.items() if k.endswith("cpu_s")) for x in runs) / samples * 1e3, 3)}


def train_cli(args: argparse.Namespace) -> dict:
    runs = []
    for _ in range(args.repeat):
        out = tempfile.mkdtemp(prefix="dasv-train-")
        try:
            cmd = [sys.executable, "-m", "dasv_cli", "train", "--train-labels", args.labels, "--features", args.store,
                   "-o", out, "--batch-size", str(args.batch_size), "--window-seconds", str(args.window / 100),
                   "--workers", str(args.workers), "--max-steps", str(args.steps), "--print-every",
                   str(args.print_every), "--norm", args.norm, "--device", "cpu", *args.net.split()]
            k0, t0 = _cpu_children(), time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
            wall = time.perf_counter() - t0
            runs.append({"samples_per_s": statistics.median(_reports(out)[1:]), "wall_s": wall,
                         "all_cpu_s": _cpu_children() - k0})
        finally:
            shutil.rmtree(out, ignore_errors=True)
    return {"net": args.net, **_summary(runs, args)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store")
    ap.add_argument("--labels", help="default: STORE.labels.txt (bench/store_scale.py build writes it)")
    ap.add_argument("--only", default="breakdown,plan,loader,loop,train")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batches", type=int, default=100, help="batches per timed run (breakdown, loader)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--window", type=int, default=350, help="frames")
    ap.add_argument("--norm", default="cmn")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--steps", type=int, default=60, help="updates per loop run (2 batches each)")
    ap.add_argument("--train-steps", type=int, default=6, help="updates per `dasv train` run")
    ap.add_argument("--print-every", type=int, default=10)
    ap.add_argument("--net", default=TINY_NET, help="network flags of the loop and `dasv train`")
    args = ap.parse_args()
    args.labels = args.labels or str(Path(args.store).parent / f"{Path(args.store).name}.labels.txt")
    only = set(args.only.split(","))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _warm(args.store)
    report = {"load_1min_before": round(os.getloadavg()[0], 2), "cores": os.cpu_count(), "window": args.window,
              "batch_size": args.batch_size, "norm": args.norm}
    if "breakdown" in only:
        report["breakdown"] = breakdown(args)
    if "plan" in only:
        report["plan"] = plan_costs(args, _dataset(args.store, args.norm)[1])
    if "loader" in only:
        report["loader"] = loader(args)
    if "loop" in only:
        report["loop_without_network"] = loop(args)
    if "train" in only:
        args.steps, args.print_every = args.train_steps, 1
        report["dasv_train"] = train_cli(args)
    report["load_1min_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
