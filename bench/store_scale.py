"""Feature store at VoxCeleb scale: open time, memory, windows/s per process and through the loader.

    python bench/store_scale.py build /work/scale/store --n 1000000          # real ShardWriter, float16
    python bench/store_scale.py measure /work/scale/store --workers 2 --batches 200

`build` writes N synthetic utterances (random frames from a fixed pool, lengths uniform in
[--min-frames, --max-frames], keys shaped like VoxCeleb's `idNNNNN/VIDEO/NNNNN`, --speakers speakers,
--per-shard utterances per shard: VoxCeleb2's shape at the default --shard-frames is ~313) with
dasv's own ShardWriter, and a `labels.txt` beside the store for `dasv train`.
`measure` prints, each in a fresh process: FeatureStore open time and RSS without and with the index
cache, `dasv inspect` time, windows/s of one process (WindowDataset.__getitems__, warm page cache),
samples/s through the real DataLoader with --workers, and the workers' private memory after the
batches; all under `ulimit -n` --nofile. Figures are medians of --repeat runs where noted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _private_mb(pid: int) -> float:
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total / 1024


def _build_part(args: argparse.Namespace, job: int) -> int:
    """Utterances job, job + jobs, ... of the store, as shards first_index = job * 1e6 onwards."""
    from dasv_cli.dsp.logmel import LogMelConfig
    from dasv_cli.io.store.writer import ShardWriter

    if not args.fsync:  # durability is not what is measured; on a shared disk fsync sets the pace
        os.fsync = lambda fd: None
    out = Path(args.directory)
    rng = np.random.default_rng(args.seed)
    pool = (rng.standard_normal((1 << 16, 80)) * 2 + 5).astype(np.float32)
    lengths = rng.integers(args.min_frames, args.max_frames + 1, size=args.n)
    starts = rng.integers(0, pool.shape[0] - args.max_frames, size=args.n)
    shard_frames = int(args.per_shard * (args.min_frames + args.max_frames) / 2)
    t0 = time.time()
    lo, hi = job * args.n // args.jobs, (job + 1) * args.n // args.jobs
    with ShardWriter(out, LogMelConfig().to_dict(), dtype=args.dtype, shard_frames=shard_frames,
                     first_index=job * 1_000_000) as w:
        for i in range(lo, hi):
            spk = i * args.speakers // args.n
            key = f"id{10000 + spk:05d}/v{i // 8:010d}/{i % 8:05d}"
            f = pool[starts[i]:starts[i] + lengths[i]]
            w.add(key, f, f.mean(0), f.std(0), samples=int(lengths[i]) * 160 + 240)
            if args.progress and i > lo and (i - lo) % 100_000 == 0:
                print(f"job {job}: {i - lo} utterances, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    return len(w.completed)


def _build_direct(args: argparse.Namespace, job: int) -> int:
    """--direct: whole shards in one write each, in the writer's exact layout (layout.shard_attrs,
    the same datasets), for index figures at a million utterances where a per-utterance
    ShardWriter.add (~1 ms of CPU) would take longer than this machine has."""
    import h5py

    from dasv_cli.dsp.logmel import LogMelConfig
    from dasv_cli.io.store.layout import shard_attrs, shard_name

    out = Path(args.directory)
    recipe = LogMelConfig().to_dict()
    rng = np.random.default_rng([args.seed, job])
    lo, hi = job * args.n // args.jobs, (job + 1) * args.n // args.jobs
    count = 0
    for first in range(lo, hi, args.per_shard):
        idx = np.arange(first, min(first + args.per_shard, hi))
        lengths = rng.integers(args.min_frames, args.max_frames + 1, size=idx.size).astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        feats = (rng.standard_normal((int(lengths.sum()), 80)) * 2 + 5).astype(args.dtype)
        keys = [f"id{10000 + i * args.speakers // args.n:05d}/v{i // 8:010d}/{i % 8:05d}" for i in idx]
        tmp = out / f".{shard_name(job * 1_000_000 + count)}.tmp"
        with h5py.File(tmp, "w") as f:
            f.create_dataset("feats", data=feats, chunks=(min(128, feats.shape[0]), 80), maxshape=(None, 80))
            f.create_dataset("keys", data=np.array(keys, dtype=object), dtype=h5py.string_dtype("utf-8"))
            f.create_dataset("offsets", data=offsets)
            f.create_dataset("lengths", data=lengths)
            f.create_dataset("samples", data=lengths * 160 + 240)
            f32 = feats.astype(np.float32)
            parts = np.split(f32, offsets[1:])
            f.create_dataset("mean", data=np.stack([p.mean(0) for p in parts]))
            f.create_dataset("std", data=np.stack([p.std(0) for p in parts]))
            for name, value in shard_attrs(recipe, args.dtype, idx.size, int(lengths.sum())).items():
                f.attrs[name] = value
        os.replace(tmp, out / shard_name(job * 1_000_000 + count))
        count += 1
    return count


def build(args: argparse.Namespace) -> None:
    from concurrent.futures import ProcessPoolExecutor

    out = Path(args.directory)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with ProcessPoolExecutor(args.jobs) as pool:
        part = _build_direct if args.direct else _build_part
        shards = sum(pool.map(part, [args] * args.jobs, range(args.jobs)))
    with open(out.parent / f"{out.name}.labels.txt", "w") as fh:
        for i in range(args.n):
            spk = i * args.speakers // args.n
            fh.write(f"id{10000 + spk:05d}/v{i // 8:010d}/{i % 8:05d} id{10000 + spk:05d}\n")
    print(json.dumps({"utterances": args.n, "shards": shards, "seconds": round(time.time() - t0, 1)}))


def _open_once(directory: str, cache: bool) -> dict:
    """In a fresh process: FeatureStore open wall/CPU time and RSS growth."""
    code = (
        "import json, os, sys, time, resource\n"
        "from pathlib import Path\n"
        "sys.path.insert(0, os.path.dirname(sys.argv[2]))\n"
        "from store_scale import _rss_mb\n"
        "import numpy, h5py\n"
        "from dasv_cli.io.store.index import INDEX_NAME\n"
        "from dasv_cli.io.store.reader import FeatureStore\n"
        "d = Path(sys.argv[1])\n"
        "if sys.argv[3] == '0' and (d / INDEX_NAME).exists(): (d / INDEX_NAME).unlink()\n"
        "r0 = _rss_mb(); t0 = time.perf_counter(); c0 = time.process_time()\n"
        "s = FeatureStore(d)\n"
        "t = time.perf_counter() - t0; c = time.process_time() - c0\n"
        "print(json.dumps({'seconds': t, 'cpu_seconds': c, 'rss_mb': _rss_mb() - r0, 'utterances': len(s),"
        " 'shards': len(s.shards)}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code, directory, __file__, "1" if cache else "0"],
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _inspect_once(directory: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dasv_cli", "inspect", directory, "--json"], capture_output=True,
                   check=True)
    return time.perf_counter() - t0


def _dataset(directory: str, norm: str):
    from dasv_cli.io.store.reader import FeatureStore
    from dasv_cli.train.windows import WindowDataset

    store = FeatureStore(directory)
    keys = store.keys()
    rows = store.rows(keys)
    lengths = store.row_lengths(rows)
    labels = np.zeros(len(keys), dtype=np.int64)
    return WindowDataset(directory, keys, labels, lengths, norm, store=store, rows=rows), lengths


def _per_process(directory: str, batches: int, window: int, batch_size: int, norm: str) -> float:
    from dasv_cli.train.windows import WindowBatchSampler

    ds, lengths = _dataset(directory, norm)
    sampler = WindowBatchSampler(lengths, batch_size, window, seed=1)
    plan = list(sampler)
    ds.__getitems__(plan[0])
    rates, cpu_rates = [], []
    for part in range(3):  # median of three runs over different batches
        chunk = plan[1 + part * batches: 1 + (part + 1) * batches]
        c0, p0 = time.perf_counter(), time.process_time()
        for items in chunk:
            ds.__getitems__(items)
        rates.append(len(chunk) * batch_size / (time.perf_counter() - c0))
        cpu_rates.append(len(chunk) * batch_size / (time.process_time() - p0))
    ds.close()
    return {"wall": round(statistics.median(rates)), "per_cpu_second": round(statistics.median(cpu_rates))}


def _through_loader(directory: str, workers: int, batches: int, window: int, batch_size: int,
                    norm: str) -> dict:
    from dasv_cli.train.loader import make_loader
    from dasv_cli.train.windows import WindowBatchSampler

    ds, lengths = _dataset(directory, norm)
    sampler = WindowBatchSampler(lengths, batch_size, window, seed=1)
    loader = make_loader(ds, sampler, workers, seed=1, rank=0)
    it = iter(loader)
    for _ in range(min(8, batches)):  # workers started and prefetching
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    rate = batches * batch_size / (time.perf_counter() - t0)
    pids = [w.pid for w in getattr(loader._iterator, "_workers", [])]
    private = [_private_mb(p) for p in pids]
    open_files = len(os.listdir("/proc/self/fd"))
    if hasattr(loader._iterator, "_shutdown_workers"):
        loader._iterator._shutdown_workers()
    return {"samples_per_s": rate, "worker_private_mb": private, "main_open_fds": open_files}


def measure(args: argparse.Namespace) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    d = str(args.directory)
    load = os.getloadavg()[0]
    cold = _open_once(d, cache=False)
    warm = [_open_once(d, cache=True) for _ in range(args.repeat)]
    report = {
        "load_1min": round(load, 2),
        "utterances": cold["utterances"], "shards": cold["shards"], "nofile": args.nofile,
        "open_without_cache": {k: round(v, 2) for k, v in cold.items() if k in ("seconds", "cpu_seconds", "rss_mb")},
        "open_with_cache": {k: round(statistics.median(w[k] for w in warm), 2)
                            for k in ("seconds", "cpu_seconds", "rss_mb")},
        "inspect_seconds": round(statistics.median(_inspect_once(d) for _ in range(args.repeat)), 2),
    }
    if args.batches:
        report["windows_per_s_one_process"] = _per_process(d, args.batches, args.window, args.batch_size,
                                                           args.norm)
        report["loader"] = {f"workers={w}": _through_loader(d, w, args.batches, args.window, args.batch_size,
                                                            args.norm) for w in sorted({0, args.workers})}
    print(json.dumps(report, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("directory")
    b.add_argument("--n", type=int, default=1_000_000)
    b.add_argument("--min-frames", type=int, default=40)
    b.add_argument("--max-frames", type=int, default=120)
    b.add_argument("--per-shard", type=int, default=313)
    b.add_argument("--speakers", type=int, default=5994)
    b.add_argument("--dtype", default="float16")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--progress", action="store_true")
    b.add_argument("--jobs", type=int, default=1, help="writer processes (shard numbers job * 1e6 onwards)")
    b.add_argument("--fsync", action="store_true", help="fsync each shard as dasv features does (slow)")
    b.add_argument("--direct", action="store_true", help="whole shards at once in the writer's layout "
                   "(index figures at 1 M; not ShardWriter)")
    m = sub.add_parser("measure")
    m.add_argument("directory")
    m.add_argument("--workers", type=int, default=2)
    m.add_argument("--batches", type=int, default=100, help="batches per timing (0: open and inspect only)")
    m.add_argument("--batch-size", type=int, default=64)
    m.add_argument("--window", type=int, default=350)
    m.add_argument("--norm", default="cmn")
    m.add_argument("--repeat", type=int, default=3)
    m.add_argument("--nofile", type=int, default=256, help="soft open-file limit for everything measured")
    args = ap.parse_args()
    build(args) if args.cmd == "build" else measure(args)


if __name__ == "__main__":
    main()
