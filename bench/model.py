"""Training-step throughput of SpeakerNet (forward + AM-Softmax cross-entropy + backward + Adam).

Reports samples/s (median of --runs timed runs of --steps steps each, after warm-up) for:
  * dasv's SpeakerNet in several modes: fp32 (torch defaults), bf16 autocast + channels_last,
    and the same under torch.compile (GPU);
  * an "original-style" baseline: the same network and weights, computed the way the original
    research code did it (MHA scores as the diagonal of a [B*T, H, H] product, head masks drawn
    with `random_` and written in place, the AM-Softmax margin matrix built on the CPU and copied
    to the device each step, plain Adam), so the two can be compared on the same machine;
  * embeddings/s (modes infer-*): the network in eval mode under inference_mode, forward only, on
    batches of windows of --frames frames.

    python bench/model.py                        # CPU: the paper config (short) and a small config
    python bench/model.py --device cuda          # GPU: batch 64 x 350 frames, all modes + baseline
    python bench/model.py --device cuda --modes bf16-cl-compile --steps 20 --json
    python bench/model.py --device cuda --configs paper,vgg3l --modes infer-fp32,infer-bf16-cl

It also checks that torch.compile traces the pooling and the whole network without graph breaks
(torch._dynamo.explain), and prints the load average, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dasv_cli.devices import resolve_device  # noqa: E402
from dasv_cli.model import ModelConfig, SpeakerNet  # noqa: E402

CONFIGS = {
    "paper": ModelConfig(),
    # a small network of the same shape: VGG4L K=128, 8 heads of 80, 1,000 speakers
    "small": ModelConfig(kernel_size=128, heads=8, num_speakers=1000),
    # the other front-end: three VGG blocks (K=1024, so frames keep 10 bands each)
    "vgg3l": ModelConfig(front_end="VGG3L"),
    # the field's baselines at their published sizes (issue 18): WeSpeaker's ResNet34 + TSTP + 256-d,
    # ECAPA-TDNN C=512 + ASTP + 192-d
    "resnet34": ModelConfig(front_end="ResNet34", kernel_size=256, pooling="Statistical", head="linear",
                            embedding_size=256),
    "ecapa512": ModelConfig(front_end="ECAPA", kernel_size=512, pooling="ASTP", head="bn-linear", embedding_size=192),
}
TRAIN_MODES = ("fp32", "bf16-cl", "bf16-cl-compile", "original-fp32")
MODES = TRAIN_MODES + ("infer-fp32", "infer-bf16-cl")


# ----------------------------------------------------------------------------- original-style baseline


def original_style_loss(net: SpeakerNet, x: torch.Tensor, labels: torch.Tensor, step: int) -> torch.Tensor:
    """Cross-entropy computed the way the original code did (cost structure and arithmetic)."""
    cfg = net.cfg
    fe = net.front_end
    h = x.view(x.size(0), x.size(1), 1, x.size(2)).transpose(1, 2)
    for b in range(1, fe.blocks + 1):
        h = F.relu(getattr(fe, f"conv{b}1")(h))
        h = F.relu(getattr(fe, f"conv{b}2")(h))
        h = F.max_pool2d(h, 2, stride=2, ceil_mode=True)
    h = h.transpose(1, 2)
    h = h.contiguous().view(h.size(0), h.size(1), h.size(2) * h.size(3))
    bsz, heads = h.size(0), cfg.heads
    hs = h.size(2) // heads
    if cfg.pooling != "DoubleMHA":
        raise SystemExit("the original-style baseline covers the Double MHA network only")
    pool = net.pooling
    query = pool.utterance.query.t()  # [hs, H] as the original stored it
    key = h.view(bsz * h.size(1), heads, hs)
    value = h.view(bsz, -1, heads, hs)
    scores = torch.diagonal(torch.matmul(key, query) / math.sqrt(heads), dim1=-2, dim2=-1)
    p_attn = F.softmax(scores.view(bsz, h.size(1), heads), dim=-2)
    ct = torch.sum(value * p_attn.unsqueeze(-1), dim=1)  # [B, H, hs]
    att = pool.head_query.view(-1, 1)
    head_scores = torch.matmul(ct, att).squeeze()
    keep = torch.empty(head_scores.size(), device=x.device).random_(int(1 / cfg.mask_prob)) > 0
    head_scores = head_scores.clone()
    head_scores[~keep] = -float("inf")
    w = F.softmax(head_scores, dim=-1).view(bsz, heads, 1)
    pooled = torch.sum(ct * w, dim=1)
    e1 = F.relu(net.fc1(pooled))
    e2 = net.bn2(F.relu(net.fc2(e1)))
    e3 = net.pre(e2)
    W = net.am_softmax.weight.t()  # [E, N] as the original stored it
    x_norm = e3 / torch.norm(e3, p=2, dim=1, keepdim=True).clamp(min=1e-12)
    w_norm = W / torch.norm(W, p=2, dim=0, keepdim=True).clamp(min=1e-12)
    costh = torch.mm(x_norm, w_norm)
    delt = torch.zeros(costh.size()).scatter_(1, labels.view(-1, 1).cpu(), cfg.margin)
    delt = delt.to(x.device)
    alpha = max(0.0, 1000.0 / (1.0 + 0.0001 * step) ** 2) if cfg.annealing else 0.0
    logits = cfg.scale * ((costh - delt) + alpha * costh) / (1 + alpha)
    return F.cross_entropy(logits, labels)


# ----------------------------------------------------------------------------- dasv training step


class _LossModule(torch.nn.Module):
    """forward(x, labels) -> loss, so that torch.compile sees the whole step's forward."""

    def __init__(self, net: SpeakerNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.net.logits(self.net(x), labels, 1000), labels)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class ModeRunner:
    """One mode's model, optimizer and inputs, warmed up; `run(steps)` times a run of steps."""

    def __init__(self, cfg: ModelConfig, mode: str, device: torch.device, batch: int, frames: int,
                 compile_mode: str | None = None) -> None:
        torch.manual_seed(0)
        self.mode, self.device, self.batch = mode, device, batch
        self.original = mode.startswith("original")
        self.infer = mode.startswith("infer")
        self.bf16 = "bf16" in mode
        self.net = SpeakerNet(cfg.replace(numerics="original") if self.original else cfg).to(device)
        self.net.train(not self.infer)
        if self.bf16:
            self.net = self.net.to(memory_format=torch.channels_last)
        fused = device.type == "cuda" and not self.original
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-4, weight_decay=1e-3, **({"fused": True} if fused else {}))
        self.loss_module = _LossModule(self.net)
        if mode.endswith("compile"):
            self.loss_module = torch.compile(self.loss_module, mode=compile_mode)
        self.x = torch.randn(batch, frames, cfg.n_mels, device=device) * 3
        self.labels = torch.randint(0, cfg.num_speakers, (batch,), device=device)
        self.last_loss = float("nan")
        self.warmup_s = 0.0
        self.rates: list[float] = []
        self.peak_gib = float("nan")

    def step(self, i: int) -> torch.Tensor:
        if self.infer:  # one batch of embeddings: what `dasv embed` and validation run
            with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                return self.net(self.x).float().sum()
        if self.original:
            loss = original_style_loss(self.net, self.x, self.labels, i)
        else:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                loss = self.loss_module(self.x, self.labels)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss

    def warmup(self, steps: int) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        for i in range(steps):
            self.step(i)
        _sync(self.device)
        self.warmup_s = time.perf_counter() - t0
        if self.device.type == "cuda":  # the peak of this mode's steps (runs later interleave)
            self.peak_gib = torch.cuda.max_memory_allocated(self.device) / 2**30

    def run(self, steps: int) -> float:
        _sync(self.device)
        t0 = time.perf_counter()
        for i in range(steps):
            loss = self.step(i)
        _sync(self.device)
        rate = self.batch * steps / (time.perf_counter() - t0)
        self.last_loss = float(loss.detach())
        self.rates.append(rate)
        return rate

    def result(self) -> dict:
        r = {
            "mode": self.mode,
            "samples_per_s": statistics.median(self.rates),
            "runs": [round(x, 2) for x in self.rates],
            "warmup_s": round(self.warmup_s, 2),
            "final_loss_finite": math.isfinite(self.last_loss),
        }
        if self.device.type == "cuda":
            r["peak_memory_gib"] = round(self.peak_gib, 2)
        return r


def graph_breaks(cfg: ModelConfig, device: torch.device) -> dict:
    """Graph breaks torch.compile meets in the pooling and in the whole network (training mode)."""
    import torch._dynamo

    small = cfg.replace(kernel_size=min(cfg.kernel_size, 64), heads=min(cfg.heads, 8), num_speakers=10)
    net = SpeakerNet(small).to(device).train()
    x = torch.randn(2, 64, small.n_mels, device=device)
    out = {}
    torch._dynamo.reset()
    feats = net.front_end(x).detach()
    out["pooling"] = torch._dynamo.explain(net.pooling)(feats).graph_break_count
    torch._dynamo.reset()
    out["network"] = torch._dynamo.explain(net)(x).graph_break_count
    torch._dynamo.reset()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    ap.add_argument("--configs", default=None, help="comma list of paper,small,vgg3l (default: cpu paper,small; cuda paper)")
    ap.add_argument("--modes", default=None, help=f"comma list of {','.join(MODES)} (default: cpu fp32,original-fp32; cuda all)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: cuda 64; cpu paper 2, small 16)")
    ap.add_argument("--frames", type=int, default=None, help="frames per example (default: cuda 350, cpu 200)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: cuda 5, compile 10, cpu 1)")
    ap.add_argument("--steps", type=int, default=None, help="steps per timed run (default: cuda 10; cpu paper 1, small 2)")
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode (default, reduce-overhead, max-autotune, ...)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs; the median is reported")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of lines")
    ap.add_argument("--no-graph-breaks", action="store_true", help="skip the torch.compile graph-break check")
    args = ap.parse_args()

    device = torch.device(resolve_device(args.device))
    gpu = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    if gpu:
        torch.backends.cudnn.benchmark = True
    configs = (args.configs or ("paper" if gpu else "paper,small")).split(",")
    modes = (args.modes or (",".join(MODES) if gpu else "fp32,original-fp32")).split(",")
    for c in configs:
        if c not in CONFIGS:
            raise SystemExit(f"unknown config {c!r}; choose from {', '.join(CONFIGS)}")
    for m in modes:
        if m not in MODES:
            raise SystemExit(f"unknown mode {m!r}; choose from {', '.join(MODES)}")

    report = {
        "device": torch.cuda.get_device_name(device) if gpu else f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "load_average": os.getloadavg(),
        "graph_breaks": None if args.no_graph_breaks else graph_breaks(CONFIGS["paper"], device),
        "results": [],
    }
    if not args.json:
        print(f"device: {report['device']}, torch {report['torch']}, load average {report['load_average']}")
        print(f"graph breaks under torch.compile: {report['graph_breaks']}")
    for name in configs:
        cfg = CONFIGS[name]
        batch = args.batch or (64 if gpu else (2 if name == "paper" else 16))
        frames = args.frames or (350 if gpu else 200)
        steps = args.steps or (10 if gpu else (1 if name == "paper" else 2))
        runners = []
        for mode in modes:
            if mode.endswith("compile") and not gpu and args.modes is None:
                continue
            if mode.startswith("original") and (cfg.pooling != "DoubleMHA" or not cfg.front_end.startswith("VGG")):
                continue  # the original code had only the VGG + Double MHA network
            warmup = args.warmup if args.warmup is not None else ((10 if mode.endswith("compile") else 5) if gpu else 1)
            try:
                runner = ModeRunner(cfg, mode, device, batch, frames, args.compile_mode)
                runner.warmup(warmup)
                runners.append(runner)
            except torch.cuda.OutOfMemoryError as exc:  # pragma: no cover - device dependent
                report["results"].append({"config": name, "mode": mode, "error": f"out of memory: {str(exc).splitlines()[0]}"})
        # interleave the timed runs so that load from other processes hits every mode alike
        for _ in range(args.runs):
            for runner in runners:
                runner.run(steps)
        for runner in runners:
            r = runner.result()
            r.update(config=name, batch=batch, frames=frames, steps=steps)
            report["results"].append(r)
        if gpu:
            del runners
            torch.cuda.empty_cache()
    if not args.json:
        for r in report["results"]:
            if "error" in r:
                print(f"{r['config']:6s} {r['mode']:16s} {r['error']}")
                continue
            extra = f", peak {r['peak_memory_gib']} GiB" if "peak_memory_gib" in r else ""
            print(f"{r['config']:6s} {r['mode']:16s} batch {r['batch']} x {r['frames']} frames: "
                  f"{r['samples_per_s']:9.2f} samples/s (runs {r['runs']}, warm-up {r['warmup_s']} s{extra})")
    report["load_average_end"] = os.getloadavg()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"load average at the end: {report['load_average_end']}")


if __name__ == "__main__":
    main()
