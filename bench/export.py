"""Embedding rate of the eager extractor vs the exported ONNX one (onnxruntime, CPU), and their agreement.

Same network, same weights, same inputs: every bundled demo utterance (40 LibriSpeech utterances),
each embedded whole, one at a time (their lengths all differ, so `dasv embed` would not batch them
either). Two comparisons, like with like:

  features in:  eager (CMN + SpeakerNet)            vs  onnxruntime features graph
  waveform in:  eager (dsp.logmel + CMN + network)  vs  onnxruntime waveform graph (DFT-conv log-mel)

Reported: utterances/s and real-time factor (compute seconds per second of audio; lower is faster),
median of --runs timed passes after one warm-up pass, and the agreement of the embeddings (largest
absolute difference, smallest cosine). Both runtimes get the same thread count (--threads).

    python bench/export.py                      # the small config (K=128, 8 heads), 1 thread
    python bench/export.py --config paper --utterances 4 --runs 3 --json

Weights are random, with BatchNorm statistics taken from the demo speech so that embeddings differ
between utterances (the agreement figures would be meaningless for near-constant outputs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dasv_cli.dsp.logmel import LogMelConfig, logmel, normalise, utterance_stats  # noqa: E402
from dasv_cli.model import ModelConfig, SpeakerNet  # noqa: E402

CONFIGS = {
    "paper": ModelConfig(),
    "small": ModelConfig(kernel_size=128, heads=8, num_speakers=1000),
    "tiny": ModelConfig(kernel_size=16, heads=4, embedding_size=12, num_speakers=7),
    # the accuracy benchmark's network (bench/train_real.py) and the field's baselines (issue 18)
    "k128": ModelConfig(kernel_size=128, heads=8, embedding_size=128, num_speakers=28),
    "resnet34": ModelConfig(front_end="ResNet34", kernel_size=256, pooling="Statistical", head="linear",
                            embedding_size=256, num_speakers=28),
    "ecapa512": ModelConfig(front_end="ECAPA", kernel_size=512, pooling="ASTP", head="bn-linear", embedding_size=192,
                            num_speakers=28),
    # the pooling rows of issue 18's table: each backbone with the other pooling, as bench/train_real.py trains it
    "k128-stat": ModelConfig(kernel_size=128, heads=8, pooling="Statistical", embedding_size=128, num_speakers=28),
    "ecapa512-dmha": ModelConfig(front_end="ECAPA", kernel_size=512, heads=8, pooling="DoubleMHA", head="bn-linear",
                                 embedding_size=128, num_speakers=28),
    "ecapa512-astp128": ModelConfig(front_end="ECAPA", kernel_size=512, pooling="ASTP", head="bn-linear",
                                    embedding_size=128, num_speakers=28),
    # ResNet34 at half width (16 base channels), the size this CPU trains in 30 minutes
    "resnet34h-stat": ModelConfig(front_end="ResNet34", kernel_size=128, pooling="Statistical", head="linear",
                                  embedding_size=128, num_speakers=28),
    "resnet34h-dmha": ModelConfig(front_end="ResNet34", kernel_size=128, heads=8, pooling="DoubleMHA",
                                  head="linear", embedding_size=128, num_speakers=28),
}
DEMO = Path(__file__).resolve().parents[1] / "dasv_cli" / "data" / "demo"


def build_net(cfg: ModelConfig, waves: list[np.ndarray]) -> SpeakerNet:
    torch.manual_seed(0)
    net = SpeakerNet(cfg)
    crops = [normalise(f, *utterance_stats(f), "cmn")[:150] for f in (logmel(w) for w in waves)]
    net.train()
    for m in net.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.momentum = None
            m.reset_running_stats()
    with torch.no_grad():
        net(torch.from_numpy(np.stack(crops)).float())
    return net.eval()


def eager_features(net: SpeakerNet, feats: np.ndarray) -> np.ndarray:
    x = normalise(feats, *utterance_stats(feats), "cmn")
    with torch.inference_mode():
        return net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None])[0].numpy()


def timed(fn, items, runs: int) -> tuple[float, list[np.ndarray]]:
    """(median seconds for one pass over `items`, outputs of the last pass), after a warm-up pass."""
    out = [fn(x) for x in items]
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = [fn(x) for x in items]
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def agreement(a: list[np.ndarray], b: list[np.ndarray]) -> dict[str, float]:
    diff = max(float(np.abs(x - y).max()) for x, y in zip(a, b))
    cos = min(float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y))) for x, y in zip(a, b))
    return {"max_abs_diff": diff, "min_cosine": cos}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="small")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--utterances", type=int, default=40, help="Use the first N demo utterances (of 40).")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from dasv_cli.deploy.export import export_onnx
    from dasv_cli.deploy.runtime import OnnxExtractor
    from dasv_cli.io.audio import read_audio
    from dasv_cli.io.checkpoint import save_checkpoint

    torch.set_num_threads(args.threads)
    files = sorted(DEMO.glob("*/*.flac"))[::max(1, 40 // args.utterances)][:args.utterances]
    waves = [np.asarray(read_audio(f).wave, dtype=np.float32) for f in files]
    feats = [logmel(w) for w in waves]
    audio_s = sum(w.size for w in waves) / 16000.0
    net = build_net(CONFIGS[args.config], waves)
    results: dict[str, object] = {"config": args.config, "utterances": len(waves), "audio_seconds": audio_s,
                                  "threads": args.threads, "runs": args.runs, "torch": torch.__version__,
                                  "loadavg": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "bench.pt"
        save_checkpoint(ckpt, {"config": {"model": net.cfg.to_dict(),
                                          "features": {"norm": "cmn", "recipe": LogMelConfig().to_dict()}},
                               "model": net.state_dict()})
        exports = {}
        for kind in ("features", "waveform"):
            t0 = time.perf_counter()
            export_onnx(ckpt, Path(tmp) / f"{kind}.onnx", waveform=kind == "waveform")
            exports[kind] = time.perf_counter() - t0
        rt_f = OnnxExtractor(Path(tmp) / "features.onnx", threads=args.threads)
        rt_w = OnnxExtractor(Path(tmp) / "waveform.onnx", threads=args.threads)
        rows = {
            "features/eager": timed(lambda f: eager_features(net, f), feats, args.runs),
            "features/onnxruntime": timed(lambda f: rt_f.embed_features(f[None])[0], feats, args.runs),
            "waveform/eager": timed(lambda w: eager_features(net, logmel(w)), waves, args.runs),
            "waveform/onnxruntime": timed(lambda w: rt_w.embed_waveforms(w[None])[0], waves, args.runs),
        }
    results["export_seconds"] = exports
    results["rates"] = {name: {"seconds": sec, "utterances_per_s": len(waves) / sec, "rtf": sec / audio_s}
                        for name, (sec, _) in rows.items()}
    results["agreement"] = {
        "features": agreement(rows["features/eager"][1], rows["features/onnxruntime"][1]),
        "waveform": agreement(rows["waveform/eager"][1], rows["waveform/onnxruntime"][1]),
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"config {args.config}: {len(waves)} utterances, {audio_s:.1f} s of audio, {args.threads} thread(s), "
          f"median of {args.runs}, torch {torch.__version__}, load {results['loadavg']:.2f}")
    print(f"export: features graph {exports['features']:.1f} s, waveform graph {exports['waveform']:.1f} s")
    print(f"{'input/runtime':24s} {'utt/s':>9s} {'RTF':>9s}")
    for name, r in results["rates"].items():
        print(f"{name:24s} {r['utterances_per_s']:9.2f} {r['rtf']:9.5f}")
    for kind, a in results["agreement"].items():
        print(f"agreement ({kind} in): max |diff| {a['max_abs_diff']:.2e}, min cosine {a['min_cosine']:.8f}")


if __name__ == "__main__":
    main()
