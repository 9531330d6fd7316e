"""The baseline backbones (ResNet34, ECAPA-TDNN), ASTP and the baselines' heads: published sizes,
every front-end x pooling, the front-ends' time arithmetic, and training with resume."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from dasv_cli.model import ModelConfig, SpeakerNet, describe
from dasv_cli.model.config import FRONT_END_NAMES, HEADS, POOLINGS
from conftest import StopAt, run_inprocess, tiny_config  # tests/ is on sys.path

pytestmark = pytest.mark.usefixtures("one_thread")

# WeSpeaker's voxceleb/v2 baselines: parameters without the classifier, and their "FLOPs" per 2 s
# (thop's count: multiply-accumulates) beside dasv's MACs for 200 frames.
PUBLISHED = {
    "ResNet34-TSTP-emb256": (dict(front_end="ResNet34", pooling="Statistical", head="linear", embedding_size=256),
                             6_634_336, 6.63, 4.55),
    "ECAPA_TDNN_GLOB_c512-ASTP-emb192": (dict(front_end="ECAPA", pooling="ASTP", head="bn-linear", embedding_size=192),
                                         6_190_720, 6.19, 1.04),
    "ECAPA_TDNN_GLOB_c1024-ASTP-emb192": (dict(front_end="ECAPA", kernel_size=1024, pooling="ASTP", head="bn-linear",
                                                embedding_size=192), 14_657_088, 14.65, 2.65),
}


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_sizes_and_compute(name: str) -> None:
    over, exact, millions, giga_macs = PUBLISHED[name]
    summary = describe(ModelConfig(**over), frames=200)
    params = summary["parameters"]["embedding_extractor"]
    assert params == exact and int(params / 1e4) / 100 == millions  # WeSpeaker's figures are truncated
    macs = summary["macs"]["input"]
    # ECAPA to the printed digit; ResNet34 0.5 % under thop's, which also counts BatchNorm and additions
    assert abs(macs / 1e9 - giga_macs) < (0.005 if name.startswith("ECAPA") else 0.03), macs
    assert summary["macs"]["per_second"] == round(macs / 2)


def test_the_paper_network_is_unchanged_by_default() -> None:
    cfg = ModelConfig()
    assert (cfg.front_end, cfg.kernel_size, cfg.head) == ("VGG4L", 1024, "paper")
    summary = describe(cfg, frames=200)
    assert summary["parameters"]["total"] == 21_520_784  # 21.5 M, as before the baselines came
    assert ModelConfig(front_end="ResNet34").kernel_size == 256 and ModelConfig(front_end="ECAPA").kernel_size == 512


TINY = dict(kernel_size=16, heads=4, embedding_size=12, num_speakers=7)


@pytest.mark.parametrize("front_end, pooling", list(itertools.product(FRONT_END_NAMES, POOLINGS)))
def test_every_front_end_with_every_pooling_trains(front_end: str, pooling: str) -> None:
    head = HEADS[(FRONT_END_NAMES.index(front_end) + POOLINGS.index(pooling)) % len(HEADS)]
    torch.manual_seed(0)
    cfg = ModelConfig(**TINY, front_end=front_end, pooling=pooling, head=head)
    net = SpeakerNet(cfg).train()
    x = torch.randn(3, 37, 80)
    labels = torch.tensor([0, 3, 6])
    emb = net(x)
    assert emb.shape == (3, 12)
    loss = torch.nn.functional.cross_entropy(net.logits(emb, labels, step=1), labels)
    loss.backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(p.numel() for p in net.parameters()) == describe(cfg)["parameters"]["total"]
    frames = net.front_end(x).shape[1]
    assert frames == net.front_end.output_frames(37) == cfg.geometry.output_frames(37)
    with torch.no_grad():  # eval: one short utterance (two output frames: "original" std needs two)
        assert torch.isfinite(net.eval()(torch.randn(1, 2 * net.min_frames, 80))).all()


def _gradient_span(front_end: torch.nn.Module, frames: int, t_out: int) -> tuple[int, int]:
    """First and last input frames with a nonzero gradient of output frame `t_out` (eval mode, a
    batch of random inputs so that no ReLU or max-pool hides a frame from all of them)."""
    x = torch.randn(8, frames, 80, dtype=torch.float64, requires_grad=True)
    front_end(x)[:, t_out].sum().backward()
    hit = (x.grad.abs().sum(dim=(0, 2)) > 0).nonzero().flatten()
    return int(hit[0]), int(hit[-1])


@pytest.mark.parametrize("front_end", FRONT_END_NAMES)
@pytest.mark.parametrize("pooling", POOLINGS)
def test_the_shortest_input_gives_a_finite_embedding_and_a_shorter_one_is_refused(front_end: str, pooling: str) -> None:
    """The original numerics' Statistical std is unbiased: NaN over one frame vector, so its network
    asks for two (a 0.16 s utterance gave VGG4L + Statistical a NaN embedding before)."""
    torch.manual_seed(0)
    net = SpeakerNet(ModelConfig(**{**TINY, "kernel_size": 32}, front_end=front_end, pooling=pooling)).eval()
    shortest = net.min_frames
    assert shortest == net.cfg.min_frames
    if pooling == "Statistical":  # two frame vectors from ceil-mode pools: one frame past the stride
        assert shortest == net.front_end.time_stride + 1
    with torch.no_grad():
        assert torch.isfinite(net(torch.randn(2, shortest, 80))).all()
        with pytest.raises(ValueError, match=f"needs at least {shortest} frames"):
            net(torch.randn(2, shortest - 1, 80)) if shortest > 1 else net(torch.randn(2, 0, 80))


@pytest.mark.parametrize("front_end", FRONT_END_NAMES)
def test_receptive_field_and_time_stride_are_what_the_network_does(front_end: str) -> None:
    torch.manual_seed(0)
    net = SpeakerNet(ModelConfig(**{**TINY, "kernel_size": 32}, front_end=front_end)).double().eval()
    fe = net.front_end
    with torch.no_grad():  # biases that keep every ReLU on, so that no dead unit hides part of the field
        for m in fe.modules():
            if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d)) and m.bias is not None:
                m.bias.fill_(5.0)
    assert (fe.time_stride, fe.receptive_field, fe.time_global) == \
        {"VGG3L": (8, 36, False), "VGG4L": (16, 76, False), "ResNet34": (8, 225, False), "ECAPA": (1, 131, True)}[front_end]
    frames = 2 * fe.receptive_field
    t_out = fe.output_frames(frames) // 2
    if fe.time_global:
        assert _gradient_span(fe, frames, t_out) == (0, frames - 1)  # SE: every frame counts
        for block in fe.blocks:
            block.se = torch.nn.Identity()  # without it, the convolutions' own field
    first, last = _gradient_span(fe, frames, t_out)
    assert last - first + 1 == fe.receptive_field
    assert first <= t_out * fe.time_stride <= last  # the field sits around the frame's own input


def test_model_command_prints_sizes_compute_and_takes_the_front_ends_own_width() -> None:
    res = run_inprocess("model", "--front-end", "ResNet34", "--pooling", "Statistical", "--head", "linear",
                        "--embedding-size", "256", "--frames", "200", "--json")
    assert res.code == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["config"]["kernel_size"] == 256 and summary["parameters"]["embedding_extractor"] == 6_634_336
    assert summary["time"] == {"stride": 8, "receptive_field": 225, "global": False}
    res = run_inprocess("model", "--front-end", "ECAPA", "--kernel-size", "1024", "--pooling", "ASTP",
                        "--head", "bn-linear", "--embedding-size", "192")
    assert res.code == 0 and 'front_end = "ECAPA"' in res.stdout  # stdout: the options as TOML
    assert "14,657,088" not in res.stdout  # the table is for people: stderr
    assert "14,657,088" in res.stderr and "1.32 G multiply-accumulates (MACs) per second" in res.stderr
    res = run_inprocess("model", "--front-end", "ResNet34", "--kernel-size", "100")
    assert res.code == 2 and "kernel_size 100 must be a multiple of 8 for ResNet34" in res.stderr


@pytest.mark.parametrize("front_end, recipe, pooling, head, machinery", [
    ("ResNet34", "paper", "Statistical", "linear", {}),
    ("ECAPA", "modern", "ASTP", "bn-linear", {}),
    # bf16 + channels_last on the CPU: how ResNet34 at its published size trains 4-5x faster on an AMX CPU
    ("ResNet34", "modern", "DoubleMHA", "linear", dict(precision="bf16", channels_last=True)),
])
def test_training_resumes_exactly(data, tmp_path, front_end: str, recipe: str, pooling: str, head: str,
                                  machinery: dict) -> None:
    from dasv_cli.train.loop import Trainer, train

    over = dict(front_end=front_end, recipe=recipe, pooling=pooling, head=head, max_steps=6,
                valid_trials=str(data / "trials.txt"), validate_every=3, **machinery)
    ref = train(tiny_config(data, tmp_path / "ref", **over))
    assert ref.step == 6 and ref.exit_code == 0
    stopper = type("Stopper", (StopAt, Trainer), {"stop_at": 4})
    assert train(tiny_config(data, tmp_path / "cut", **over), trainer_cls=stopper).step == 4
    res = run_inprocess("train", "-o", tmp_path / "cut", "--resume", "-q")  # as a user resumes it
    assert res.code == 0, res.stderr
    a = torch.load(tmp_path / "ref" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert b["step"] == 6 and a["config"]["model"]["front_end"] == front_end and a["config"]["train"]["kernel_size"] == 16
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert a["best_eer"] == b["best_eer"]
    if front_end == "ResNet34":  # the layout the network trained in, also after --resume
        key = "front_end.layer1.0.conv1.weight"  # conv1 has one input channel: both layouts at once
        cl = torch.channels_last
        assert a["model"][key].is_contiguous(memory_format=cl) == bool(machinery) == b["model"][key].is_contiguous(memory_format=cl)
    net = SpeakerNet(ModelConfig.from_dict(a["config"]["model"]))
    net.load_state_dict(a["model"])  # a plain model takes it, whatever the layout trained in
    assert torch.isfinite(net.eval()(torch.randn(1, 40, 80))).all()
