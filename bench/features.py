"""Benchmark `dasv features` (the CLI, whole process) against the original tool's way of working.

Method (issue 2): on librispeech-train-clean-5-lite (688 files, 1.77 h) time, each as its own
process, (a) a baseline that does what the original research script does -- librosa per file, one
pickle per file written next to the audio, one process -- and (b) `dasv features --jobs 1` and
`--jobs 2`. Each is timed on the list and on the list twice over (the second copy under other paths,
so the output keys are distinct), and throughput is taken from the difference, which cancels start-up:

    x real-time = audio seconds of the list / (time(list twice) - time(list))

The same differences of CPU time (user + sys of the whole process tree) give a second ratio that
load from other processes distorts far less than wall-clock time does: on a busy machine quote both.
`--parts 2` adds N `dasv features --part I/N --jobs 1` processes run at once into one directory (what
N cluster jobs do, here on one machine).

Also: start-up (`dasv features` on a single file, whole process: wall and CPU) and the size on disk of
the store versus the baseline's pickles. Each figure is the median of --repeats runs; runs are
interleaved so that load from other processes hits every variant alike. The load average is printed.

    python bench/features.py                       # ../shared/data/librispeech-train-clean-5-lite
    python bench/features.py --data DIR --repeats 5 --parts 2
    python bench/features.py --compare ../main      # before/after: another checkout's dasv beside this one
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "librispeech-train-clean-5-lite"

# The original tool (featureExtractor.py), reproduced: float64 read, librosa STFT + mel per file at the
# file's own rate, the [80, frames] float64 array pickled next to the audio.
BASELINE = r'''
import pickle, sys
import numpy as np
import soundfile as sf
import librosa

def mfsc(y, sfr, window_size=0.025, window_stride=0.010, window="hamming", n_mels=80, preemCoef=0.97):
    win_length = int(sfr * window_size)
    hop_length = int(sfr * window_stride)
    n_fft = 512
    y *= 32768
    y[1:] = y[1:] - preemCoef * y[:-1]
    y[0] *= (1 - preemCoef)
    S = librosa.stft(y, n_fft=n_fft, hop_length=hop_length, win_length=win_length, window=window, center=False)
    D = np.abs(S)
    param = librosa.feature.melspectrogram(S=D, sr=sfr, n_mels=n_mels, fmin=0, fmax=sfr / 2, norm=None)
    return np.log(np.maximum(1, param))

with open(sys.argv[1]) as files:
    for line in files:
        path = line.rstrip("\n")
        print(path)
        y, sfreq = sf.read(path)
        mf = mfsc(y, sfreq)
        with open(path.rsplit(".", 1)[0] + ".pickle", "wb") as handle:
            pickle.dump(mf, handle)
'''


def audio_seconds(files: list[Path]) -> float:
    import soundfile as sf

    return sum(sf.info(str(f)).duration for f in files)


def mirror(files: list[Path], src_root: Path, dst_root: Path) -> list[Path]:
    """Symlinks to `files` under dst_root (same relative layout): other paths, hence other keys."""
    out = []
    for f in files:
        target = dst_root / f.relative_to(src_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.symlink(f, target)
        out.append(target)
    return out


CPU: dict[str, float] = {}


def timed(cmds: list[list[str]], cwd: Path, env: dict[str, str]) -> float:
    """Wall-clock seconds of the processes `cmds`, run at once; their CPU seconds (user + sys, with
    their children) go to CPU["last"]."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for cmd in cmds]
    errors = [proc.communicate()[1] for proc in procs]
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU["last"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    for cmd, proc, err in zip(cmds, procs, errors):
        if proc.returncode != 0:
            sys.exit(f"benchmark command failed ({proc.returncode}): {' '.join(cmd)}\n{err.decode()[-2000:]}")
    return elapsed


def remove_pickles(root: Path) -> int:
    total = 0
    for p in root.rglob("*.pickle"):
        total += p.stat().st_size
        p.unlink()
    return total


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a folder of audio (searched recursively)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--parts", type=int, nargs="*", default=[], metavar="N",
                    help="also N concurrent `--part I/N --jobs 1` processes into one directory")
    ap.add_argument("--compare", type=Path, metavar="CHECKOUT",
                    help="also time another checkout's dasv (e.g. the main branch: before/after in one run)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    args.data = args.data.resolve()  # the mirrors are symlinks: a relative target would dangle

    files = sorted(p for p in args.data.rglob("*") if p.suffix.lower() in (".flac", ".wav", ".ogg"))
    if not files:
        sys.exit(f"no audio under {args.data}")
    seconds = audio_seconds(files)
    work = Path(tempfile.mkdtemp(prefix="dasv-bench-"))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    try:
        a = mirror(files, args.data, work / "a")
        b = mirror(files, args.data, work / "b")
        once, twice, single = work / "once.lst", work / "twice.lst", work / "single.lst"
        once.write_text("".join(f"{p}\n" for p in a))
        twice.write_text("".join(f"{p}\n" for p in a + b))
        single.write_text(f"{a[0]}\n")
        (work / "baseline.py").write_text(BASELINE)
        for f in files:  # warm the page cache so that every variant reads from memory
            f.read_bytes()

        dasv = [sys.executable, "-m", "dasv_cli", "features", "--quiet"]
        variants: dict[str, list[list[str]]] = {"baseline": [[sys.executable, str(work / "baseline.py")]]}
        for j in args.jobs:
            variants[f"dasv --jobs {j}"] = [dasv + ["--jobs", str(j)]]
        for n in args.parts:
            variants[f"dasv {n} parts"] = [dasv + ["--jobs", "1", "--part", f"{i}/{n}"] for i in range(1, n + 1)]
        envs = {name: env for name in variants}
        if args.compare is not None:
            for j in args.jobs:
                variants[f"other --jobs {j}"] = [dasv + ["--jobs", str(j)]]
                envs[f"other --jobs {j}"] = dict(env, PYTHONPATH=str(args.compare.resolve()))
        times: dict[tuple[str, str], list[float]] = {}
        cpu: dict[tuple[str, str], list[float]] = {}
        sizes: dict[str, int] = {}
        startup: list[float] = []
        startup_cpu: list[float] = []
        load_before = os.getloadavg()
        print(f"data: {args.data} ({len(files)} files, {seconds / 3600:.2f} h); {os.cpu_count()} cores; "
              f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}", flush=True)
        for rep in range(args.repeats):
            for name, cmd in variants.items():
                for label, lst in (("once", once), ("twice", twice)):
                    if name == "baseline":
                        remove_pickles(work)
                        t = timed([c + [str(lst)] for c in cmd], work, envs[name])
                        if label == "once":
                            sizes[name] = sum(p.stat().st_size for p in work.rglob("*.pickle"))
                        remove_pickles(work)
                    else:
                        out = work / "store"
                        shutil.rmtree(out, ignore_errors=True)
                        t = timed([c + [str(lst), "-o", str(out)] for c in cmd], work, envs[name])
                        if label == "once":
                            sizes[name] = dir_bytes(out)
                        shutil.rmtree(out, ignore_errors=True)
                    times.setdefault((name, label), []).append(t)
                    cpu.setdefault((name, label), []).append(CPU["last"])
                    print(f"  run {rep + 1}/{args.repeats}  {name:<14} {label:<5} {t:6.2f} s wall "
                          f"{CPU['last']:6.2f} s cpu  load {os.getloadavg()[0]:.2f}", flush=True)
            out = work / "single-store"
            shutil.rmtree(out, ignore_errors=True)
            startup.append(timed([dasv + ["--jobs", "1", str(single), "-o", str(out)]], work, env))
            startup_cpu.append(CPU["last"])
            shutil.rmtree(out, ignore_errors=True)

        load_after = os.getloadavg()
        print()
        print("medians; diff = median of the per-repeat differences (list twice - list): start-up cancels")
        print(f"{'variant':<16}{'list (s)':>10}{'twice (s)':>11}{'diff (s)':>10}{'x real-time':>13}{'vs baseline':>13}"
              f"{'cpu diff (s)':>14}{'x rt per cpu':>14}{'vs baseline':>13}")
        base_rate = base_cpu = None
        for name in variants:
            t1 = statistics.median(times[(name, "once")])
            t2 = statistics.median(times[(name, "twice")])
            d = statistics.median([y - x for x, y in zip(times[(name, "once")], times[(name, "twice")])])
            c = statistics.median([y - x for x, y in zip(cpu[(name, "once")], cpu[(name, "twice")])])
            rate = seconds / d if d > 0 else float("inf")
            cpu_rate = seconds / c if c > 0 else float("inf")
            if base_rate is None:
                base_rate, base_cpu = rate, cpu_rate
            print(f"{name:<16}{t1:>10.2f}{t2:>11.2f}{d:>10.2f}{rate:>12.0f}x{rate / base_rate:>12.2f}x"
                  f"{c:>14.2f}{cpu_rate:>13.0f}x{cpu_rate / base_cpu:>12.2f}x")
        print("(wall ratios need a quiet machine; the CPU ratios say what each variant costs per audio second)")
        print()
        print(f"start-up, `dasv features` on one file (whole process, median of {len(startup)}): "
              f"{statistics.median(startup):.2f} s wall, {statistics.median(startup_cpu):.2f} s cpu")
        for name, size in sizes.items():
            print(f"size on disk for the list: {name:<14} {size / 1e6:8.1f} MB")
        print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
