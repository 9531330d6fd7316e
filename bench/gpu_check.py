"""The Python half of bench/gpu_check.sh: synthetic data, checks of what each step wrote, its figures.

Each subcommand prints what the shell script needs: `store` and `checkpoint` make inputs; the
`*-line` and `check-*` subcommands check a step's outputs and print its figures as one JSON object
on the first line and a human line on the second (the script puts the second in the step's result
line and keeps the first for summary.json). Kept apart from the shell so that it can be read and
tested like the rest of dasv; nothing here is imported by dasv itself.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

NEEDED = ("torch", "typer", "rich", "numpy", "h5py", "tensorboard")  # the steps' imports
OPTIONAL = ("scipy", "sklearn", "matplotlib", "soundfile", "librosa", "soxr", "av", "miniaudio", "pyroomacoustics")


def emit(figures: dict, line: str) -> None:
    """The step's figures (JSON) and its one human line."""
    print(json.dumps(figures))
    print(line)


def fmt(x: float, digits: int = 0) -> str:
    return "nan" if x is None or not math.isfinite(x) else f"{x:,.{digits}f}"


# -- setup -----------------------------------------------------------------------------------------


def cmd_setup(args: argparse.Namespace) -> int:
    """Python, torch, the GPU, dasv (which copy) and the modules the steps import."""
    missing = []
    for name in NEEDED + OPTIONAL:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a broken install counts as missing
            missing.append(name)
    import torch

    import dasv_cli

    figures = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
               "cuda_available": torch.cuda.is_available(), "dasv": dasv_cli.__version__,
               "dasv_from": str(Path(dasv_cli.__file__).parent), "installed": args.installed,
               "missing": missing, "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        figures.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1),
                       capability=f"{p.major}.{p.minor}", gpus=torch.cuda.device_count(),
                       bf16=torch.cuda.is_bf16_supported())
    gpu = (f"{figures['gpu']} ({figures['gpu_memory_gib']} GiB, sm {figures['capability']}, "
           f"{figures['gpus']} GPU(s))" if "gpu" in figures else "no CUDA device")
    line = (f"{gpu}; torch {torch.__version__} (CUDA {torch.version.cuda}); python {figures['python']}; "
            f"{figures['cpus']} CPUs; dasv {dasv_cli.__version__} {args.installed}"
            + (f"; missing modules: {', '.join(missing)}" if missing else ""))
    needed_missing = [m for m in missing if m in NEEDED]
    if needed_missing:
        print(f"the steps need {', '.join(needed_missing)}", file=sys.stderr)
        return 1
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"no CUDA device visible to torch {torch.__version__}", file=sys.stderr)
        emit(figures, line)
        return 1
    emit(figures, line)
    return 0


# -- inputs ----------------------------------------------------------------------------------------


def cmd_store(args: argparse.Namespace) -> int:
    """A synthetic feature store (train_gpu's), VoxCeleb-style trials over its first utterances, and
    a short key list (the embed step's start-up run)."""
    import numpy as np

    from train_gpu import make_store

    labels = make_store(args.dir, args.utterances, args.frames, args.speakers, "float16", seed=args.seed)
    rows = [line.split() for line in labels.read_text().splitlines()]
    rng = np.random.default_rng(args.seed)
    # the utterances of the first few speakers, so that random pairs hold both kinds of trial
    pool = sorted(rows, key=lambda r: int(r[1]))[: min(len(rows), 120)]
    trials = [f"1 {pool[0][0]} {pool[1][0]}\n", f"0 {pool[0][0]} {pool[-1][0]}\n"]
    for _ in range(args.trials):
        a, b = rng.choice(len(pool), size=2, replace=False)
        trials.append(f"{int(pool[a][1] == pool[b][1])} {pool[a][0]} {pool[b][0]}\n")
    (args.dir / "trials.txt").write_text("".join(trials))
    (args.dir / "keys-small.txt").write_text("".join(r[0] + "\n" for r in rows[:16]))
    return 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    """An untrained checkpoint of the paper's network (or --tiny) for the store's recipe: the embed
    step's model when the train step left none."""
    import torch

    from dasv_cli.dsp.logmel import LogMelConfig
    from dasv_cli.io.checkpoint import save_checkpoint
    from dasv_cli.model import ModelConfig, SpeakerNet

    cfg = ModelConfig(num_speakers=10, **(dict(kernel_size=16, heads=4, embedding_size=16) if args.tiny else {}))
    torch.manual_seed(0)
    net = SpeakerNet(cfg).eval()
    save_checkpoint(args.out, {"config": {"model": cfg.to_dict(), "train": {},
                                          "features": {"norm": "cmn", "recipe": LogMelConfig().to_dict()}},
                               "model": net.state_dict(), "optimizer": None, "speakers": None, "step": 0,
                               "epoch": 0, "best_eer": None, "rng": None})
    return 0


# -- checks and figures ----------------------------------------------------------------------------


def _load_on_cpu(path: Path) -> dict:
    """The checkpoint as the house loads it: torch.load(weights_only=True) onto the CPU, every tensor
    of the model then on the CPU and finite."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    for name, t in ckpt["model"].items():
        if t.device.type != "cpu" or (t.is_floating_point() and not torch.isfinite(t).all()):
            raise SystemExit(f"{path}: {name} is on {t.device} or not finite")
    return ckpt


def cmd_check_train(args: argparse.Namespace) -> int:
    """The run's checkpoints load on the CPU (and build the network there), at the expected step."""
    import numpy as np
    import torch

    from dasv_cli.eval.embed import load_extractor

    last, best = args.run / "last.pt", args.run / "best.pt"
    ckpt = _load_on_cpu(last)
    if int(ckpt["step"]) != args.steps:
        raise SystemExit(f"{last}: step {ckpt['step']}, expected {args.steps}")
    best_step = int(_load_on_cpu(best)["step"]) if best.exists() else None
    model, _ = load_extractor(last, "cpu")
    with torch.no_grad():
        e = model(torch.randn(1, 200, model.cfg.n_mels)).numpy()
    if not np.isfinite(e).all():
        raise SystemExit(f"{last}: the embedding of a random input is not finite")
    rows = [json.loads(x) for x in (args.run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    rates = [r["samples_per_s"] for r in rows if "samples_per_s" in r]
    eers = [r["eer"] for r in rows if "eer" in r]
    figures = {"step": args.steps, "best_step": best_step, "device": ckpt["config"]["train"].get("device"),
               "gpus": ckpt["config"]["train"].get("gpus"), "loss_last": losses[-1] if losses else None,
               "samples_per_s_last": rates[-1] if rates else None, "eer_last": eers[-1] if eers else None,
               "validations": len(eers), "seconds": args.seconds, "checkpoint_mib": round(last.stat().st_size / 2**20, 1)}
    if not losses or not all(math.isfinite(x) for x in losses):
        raise SystemExit(f"{args.run}/metrics.jsonl: no finite loss ({losses})")
    line = (f"{args.steps} updates on {figures['device']}, last.pt and best.pt (step {best_step}) load on the CPU "
            f"(weights_only); {len(eers)} validations, EER {fmt(eers[-1] if eers else float('nan'), 1)}%; "
            f"{fmt(rates[-1] if rates else float('nan'))} samples/s at the last report; "
            f"runs {' + '.join(fmt(s, 0) + ' s' for s in args.seconds)}")
    emit(figures, line)
    return 0


def cmd_train_gpu_line(args: argparse.Namespace) -> int:
    """train_gpu.py's JSON as the step's figures: end to end beside model only, against the target."""
    data = json.loads(args.json.read_text())
    results, target = data["results"], data.get("target", 3500.0)
    parts = [f"{name} {fmt(r['end_to_end_samples_per_s'])} (model only {fmt(r['model_only_samples_per_s'])}, "
             f"peak {r['peak_gib']:.1f} GiB)" for name, r in results.items()]
    best = max((r["end_to_end_samples_per_s"] for r in results.values()), default=float("nan"))
    verdict = ("" if data.get("device") != "cuda" else
               f"; best {fmt(best)} {'meets' if best >= target else 'is BELOW'} the target {fmt(target)}")
    emit({**data, "best": best, "met": data.get("device") == "cuda" and best >= target},
         "end-to-end samples/s: " + "; ".join(parts) + verdict)
    return 0 if results else 1


def cmd_model_line(args: argparse.Namespace) -> int:
    """bench/model.py --json as the step's figures: samples/s per mode (infer-*: embeddings/s)."""
    data = json.loads(args.json.read_text())
    parts = []
    for r in data["results"]:
        if "error" in r:
            parts.append(f"{r['config']} {r['mode']} {r['error']}")
            continue
        unit = "embeddings/s" if r["mode"].startswith("infer") else "samples/s"
        parts.append(f"{r['config']} {r['mode']} {fmt(r['samples_per_s'])} {unit}")
    breaks = data.get("graph_breaks")
    emit(data, "; ".join(parts) + (f"; graph breaks {breaks}" if breaks is not None else ""))
    return 0 if data["results"] and all("error" not in r for r in data["results"]) else 1


def cmd_check_embed(args: argparse.Namespace) -> int:
    """The table holds every utterance of the store, finite; utterances/s without the start-up."""
    import numpy as np

    from dasv_cli.io.embeddings import read_embeddings
    from dasv_cli.io.store.reader import FeatureStore

    table = read_embeddings(args.table)
    with FeatureStore(args.features) as store:
        expected = len(store)
    if len(table) != expected or not np.isfinite(table.vectors).all():
        raise SystemExit(f"{args.table}: {len(table)} rows for {expected} utterances, or not finite")
    small, full = args.seconds
    rate = (expected - args.small) / max(full - small, 1e-9)
    figures = {"utterances": expected, "dim": table.dim, "seconds_full": full, "seconds_small": small,
               "utterances_per_s": rate, "utterances_per_s_wall": expected / full}
    emit(figures, f"{fmt(rate)} utterances/s ({expected} utterances in {full:.1f} s, of which ~{small:.1f} s "
                  f"start-up as a {args.small}-utterance run took; {fmt(expected / full)}/s with it)")
    return 0


def cmd_sampler(args: argparse.Namespace) -> int:
    """nvidia-smi's CSV (utilisation %, memory MiB) every 0.5 s from the CPU's counters: the stand-in
    that lets --smoke test the sampling and its summary on a machine without a GPU."""
    def cpu_times() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait

    def used_mib() -> int:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        kib = lambda k: int(info[k].split()[0])  # noqa: E731
        return (kib("MemTotal") - kib("MemAvailable")) // 1024

    total, idle = cpu_times()
    while True:
        time.sleep(0.5)
        t, i = cpu_times()
        util = 100.0 * (1 - (i - idle) / max(t - total, 1))
        total, idle = t, i
        print(f"{util:.0f}, {used_mib()}", flush=True)


def cmd_smi_summary(args: argparse.Namespace) -> int:
    """Median and peak utilisation and memory of the samples taken during the training benchmark."""
    util, mem = [], []
    for line in args.csv.read_text().splitlines():
        fields = [f.strip() for f in line.split(",")]
        try:
            util.append(float(fields[0]))
            mem.append(float(fields[1]))
        except (ValueError, IndexError):
            continue  # a header, or a line cut by the kill
    if not util:
        raise SystemExit(f"{args.csv}: no samples")
    figures = {"source": args.source, "samples": len(util), "util_median": statistics.median(util),
               "util_peak": max(util), "memory_mib_median": statistics.median(mem), "memory_mib_peak": max(mem)}
    emit(figures, f"{args.source}: utilisation median {figures['util_median']:.0f}% peak {max(util):.0f}%, "
                  f"memory median {figures['memory_mib_median']:,.0f} MiB peak {max(mem):,.0f} MiB "
                  f"({len(util)} samples)")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    """summary.json: every step's line and figures, in order."""
    steps = []
    for line in (args.out / "summary.txt").read_text().splitlines():
        if not line.startswith("STEP "):
            continue
        name, rest = line[5:].split(":", 1)
        status = rest.split()[0] if rest.split() else "FAIL"
        figures_file = args.work / f"{name}.figures.json"
        figures = json.loads(figures_file.read_text()) if figures_file.exists() else None
        steps.append({"step": name, "status": status, "line": rest.strip(), "figures": figures})
    summary = {"mode": args.mode, "elapsed_s": args.elapsed, "ok": sum(s["status"] == "ok" for s in steps),
               "failed": [s["step"] for s in steps if s["status"] != "ok"], "steps": steps}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("setup")
    p.add_argument("--device", default="cuda")
    p.add_argument("--installed", default="")
    p = sub.add_parser("store")
    p.add_argument("dir", type=Path)
    for name, default in (("utterances", 3000), ("frames", 500), ("speakers", 200), ("trials", 400), ("seed", 0)):
        p.add_argument(f"--{name}", type=int, default=default)
    p = sub.add_parser("checkpoint")
    p.add_argument("out", type=Path)
    p.add_argument("--tiny", action="store_true")
    p = sub.add_parser("check-train")
    p.add_argument("run", type=Path)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--seconds", type=float, nargs="*", default=[])
    for name in ("train-gpu-line", "model-line"):
        sub.add_parser(name).add_argument("json", type=Path)
    p = sub.add_parser("check-embed")
    p.add_argument("table", type=Path)
    p.add_argument("features", type=Path)
    p.add_argument("--small", type=int, required=True, help="utterances of the start-up run")
    p.add_argument("--seconds", type=float, nargs=2, required=True, help="wall of the small and the full run")
    sub.add_parser("sampler")
    p = sub.add_parser("smi-summary")
    p.add_argument("csv", type=Path)
    p.add_argument("--source", default="nvidia-smi")
    p = sub.add_parser("summary")
    p.add_argument("out", type=Path)
    p.add_argument("work", type=Path)
    p.add_argument("--mode", default="device")
    p.add_argument("--elapsed", type=float, default=0.0)
    args = ap.parse_args()
    return globals()["cmd_" + args.cmd.replace("-", "_")](args)


if __name__ == "__main__":
    sys.exit(main())
