"""SpeakerNet, front-ends, AM-Softmax and the `dasv model` summary."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from dasv_cli.model import AMSoftmax, ModelConfig, SpeakerNet, annealing_alpha, build_front_end, describe

torch.set_num_threads(1)

# a few thousand parameters: VGG4L K=16 (channels 2, 4, 8, 16), frame vectors 80, 4 heads of 20
TINY = dict(kernel_size=16, heads=4, embedding_size=12, num_speakers=7)


def tiny(**over) -> SpeakerNet:
    torch.manual_seed(0)
    return SpeakerNet(ModelConfig(**{**TINY, **over}))


def test_paper_config_defaults_and_parameter_count() -> None:
    cfg = ModelConfig()
    assert (cfg.front_end, cfg.kernel_size, cfg.pooling, cfg.heads, cfg.mask_prob) == ("VGG4L", 1024, "DoubleMHA", 32, 0.3)
    assert (cfg.embedding_size, cfg.num_speakers, cfg.scale, cfg.margin, cfg.numerics) == (400, 5994, 30.0, 0.4, "original")
    with torch.device("meta"):
        net = SpeakerNet(cfg)
    total = sum(p.numel() for p in net.parameters())
    assert round(total / 1e6, 1) == 21.5
    summary = describe(cfg)
    assert summary["parameters"]["total"] == total
    assert summary["parameters"]["front_end"] == 18_731_904
    assert summary["parameters"]["classifier"] == 400 * 400 + 400 + 400 * 5994
    assert summary["sizes"]["front_end"] == [22, 5120]  # 350 frames -> ceil(350/16), 1024 x ceil(80/16)
    assert summary["sizes"]["pooling"] == [160] and summary["head_size"] == 160
    # the paper's numerics apply the first BatchNorm, which the original code never uses: 800 more
    assert describe(cfg.replace(numerics="paper"))["parameters"]["total"] == total + 800


@pytest.mark.parametrize("frames", [16, 17, 31, 100, 351, 1000])
def test_shapes_for_any_length(frames: int) -> None:
    net = tiny().eval()
    x = torch.randn(2, frames, 80)
    with torch.no_grad():
        assert net.front_end(x).shape == (2, math.ceil(frames / 16), 16 * 5)
        assert net(x).shape == (2, 12)
        assert net(x[:1]).shape == (1, 12)  # batch 1
        assert torch.isfinite(net(x)).all()


@pytest.mark.parametrize("front_end, blocks, min_frames, bands", [("VGG4L", 4, 16, 5), ("VGG3L", 3, 8, 10)])
def test_front_ends(front_end: str, blocks: int, min_frames: int, bands: int) -> None:
    fe = build_front_end(front_end, 16)
    assert fe.min_frames == min_frames and fe.output_size == 16 * bands
    names = {n.split(".")[0] for n, _ in fe.named_parameters()}
    assert names == {f"conv{b}{j}" for b in range(1, blocks + 1) for j in (1, 2)}
    x = torch.randn(3, 45, 80)
    y = fe(x)
    assert y.shape == (3, math.ceil(45 / 2**blocks), 16 * bands)
    # channel-major flattening: element (c, f) of frame t sits at c * bands + f
    h = x.unsqueeze(1)
    for b in range(1, blocks + 1):
        h = F.relu(getattr(fe, f"conv{b}1")(h))
        h = F.relu(getattr(fe, f"conv{b}2")(h))
        h = F.max_pool2d(h, 2, 2, ceil_mode=True)
    assert torch.allclose(y[1, 2, 3 * bands + 4], h[1, 3, 2, 4])


def test_too_short_or_wrong_shape_inputs_are_clear_errors() -> None:
    net = tiny()
    with pytest.raises(ValueError, match="15 frames; VGG4L needs at least 16"):
        net(torch.randn(2, 15, 80))
    with pytest.raises(ValueError, match=r"\[batch, frames, 80\]"):
        net(torch.randn(2, 40, 64))
    assert tiny(front_end="VGG3L").min_frames == 8
    tiny(front_end="VGG3L").eval()(torch.randn(1, 8, 80))


def test_config_validation_and_round_trip() -> None:
    cfg = ModelConfig(**TINY)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown model config key"):
        ModelConfig.from_dict({**cfg.to_dict(), "dropout": 0.1})
    with pytest.raises(ValueError, match="heads do not divide"):
        ModelConfig(heads=7)
    with pytest.raises(ValueError, match="unknown pooling"):
        ModelConfig(pooling="LDE")
    with pytest.raises(ValueError, match="unknown front-end"):
        ModelConfig(front_end="ResNet50")
    with pytest.raises(ValueError, match="numerics"):
        ModelConfig(numerics="fast")
    with pytest.raises(ValueError, match="multiple of 8"):
        ModelConfig(kernel_size=100)


def test_fc_block_numerics() -> None:
    paper, orig = tiny(numerics="paper").eval(), tiny(numerics="original").eval()
    assert paper.bn1 is not None and orig.bn1 is None
    with torch.no_grad():
        for bn in (paper.bn1, paper.bn2, orig.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    p = torch.randn(4, paper.pooling.output_size)
    e1 = F.relu(paper.fc1(p))
    want = paper.bn2(F.relu(paper.fc2(paper.bn1(e1))))
    assert torch.allclose(paper.embed_pooled(p), want)
    want = orig.bn2(F.relu(orig.fc2(F.relu(orig.fc1(p)))))
    assert torch.allclose(orig.embed_pooled(p), want)


def test_am_softmax_logits_equal_scaled_cosine_minus_margin() -> None:
    torch.manual_seed(0)
    am = AMSoftmax(6, 5, scale=30.0, margin=0.4)
    x = torch.randn(8, 6, dtype=torch.float64)
    am = am.double()
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    cos = torch.stack([torch.stack([torch.dot(x[i], am.weight[j]) / (x[i].norm() * am.weight[j].norm())
                                    for j in range(5)]) for i in range(8)]).detach()
    onehot = F.one_hot(labels, 5).double()
    assert torch.allclose(am(x, labels), 30 * (cos - 0.4 * onehot), atol=1e-12)
    assert torch.allclose(am(x), 30 * cos, atol=1e-12)  # no labels: no margin
    # annealing: m is scaled by 1 / (1 + a), a = max(0, 1000 / (1 + 1e-4 step)^2)
    am.annealing = True
    for step in (0, 1000, 10_000, 300_000):
        a = max(0.0, 1000 / (1 + 1e-4 * step) ** 2)
        assert annealing_alpha(step) == pytest.approx(a)
        assert torch.allclose(am(x, labels, step=step), 30 * (cos - 0.4 / (1 + a) * onehot), atol=1e-12)
    assert am.margin_factor(0) == pytest.approx(1 / 1001)
    assert am.margin_factor(10**9) == pytest.approx(1.0, abs=1e-6)


def test_cross_entropy_finite_for_any_batch() -> None:
    torch.manual_seed(0)
    net = tiny().train()
    for batch in (2, 5, 33):
        x = torch.randn(batch, 20 + batch, 80) * 10
        labels = torch.randint(0, 7, (batch,))
        emb = net(x)
        loss = F.cross_entropy(net.logits(emb, labels, step=3), labels)
        assert torch.isfinite(loss)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
        net.zero_grad()
    # degenerate embeddings (all zeros, huge) still give finite logits
    am = net.am_softmax
    for emb in (torch.zeros(3, 12), torch.full((3, 12), 1e30)):
        assert torch.isfinite(F.cross_entropy(am(emb, torch.tensor([0, 1, 2])), torch.tensor([0, 1, 2])))


@pytest.mark.parametrize("numerics", ["paper", "original"])
def test_a_few_adam_steps_learn_a_tiny_task(numerics: str) -> None:
    # head dropping off: in a net this small it swamps the signal that BatchNorm amplifies
    net = tiny(num_speakers=3, mask_prob=0.0, numerics=numerics)
    labels = torch.arange(12) % 3
    x = torch.randn(12, 32, 80) + 2 * labels.view(-1, 1, 1).float()  # separable by level
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for step in range(40):
        loss = F.cross_entropy(net.logits(net.train()(x), labels, step=step), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.2 * losses[0]


def test_eval_deterministic_and_training_masks() -> None:
    net = tiny(heads=4, mask_prob=0.5).eval()
    x = torch.randn(3, 40, 80)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
    net.train()
    for module in net.modules():  # only the masks vary between the two calls
        if isinstance(module, torch.nn.BatchNorm1d):
            module.momentum = 0.0
    torch.manual_seed(1)
    a = net(x)
    torch.manual_seed(2)
    b = net(x)
    assert not torch.equal(a, b)


def test_channels_last_and_autocast_bfloat16() -> None:
    net = tiny().eval()
    x = torch.randn(2, 50, 80)
    with torch.no_grad():
        ref = net(x)
        net_cl = tiny().eval().to(memory_format=torch.channels_last)
        assert net_cl.front_end.conv12.weight.is_contiguous(memory_format=torch.channels_last)
        assert torch.allclose(net_cl(x), ref, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net_cl(x)
            logits = net_cl.logits(out)
        assert torch.isfinite(out.float()).all()
        assert logits.dtype == torch.float32  # the cosine classifier stays in float32
        assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max() + 0.05


def test_whole_network_traces_without_graph_breaks() -> None:
    import torch._dynamo

    torch._dynamo.reset()
    net = tiny().train()
    explanation = torch._dynamo.explain(net)(torch.randn(2, 32, 80))
    assert explanation.graph_break_count == 0, explanation.break_reasons


def test_cli_model_summary(capsys) -> None:
    from dasv_cli.cli.app import run

    assert run(["model", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["parameters"]["total"] == describe(ModelConfig())["parameters"]["total"]
    assert round(summary["parameters"]["total"] / 1e6, 1) == 21.5
    assert run(["model", "--pooling", "MHA", "--heads", "16", "--num-speakers", "1211", "--frames", "200",
                "--front-end", "VGG3L", "--kernel-size", "512", "--embedding-size", "256", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["config"]["pooling"] == "MHA" and s["sizes"]["front_end"] == [25, 512 * 10]
    assert s["sizes"]["logits"] == [1211] and s["sizes"]["embedding"] == [256]
    assert run(["model"]) == 0
    out = capsys.readouterr()
    assert "21,520,784" in out.err and "21,520,784" not in out.out  # the table is for people: stderr
    assert out.out.startswith("# dasv model") and "heads = 32\n" in out.out  # the options are data: stdout
    assert run(["model", "--heads", "7"]) == 2
    assert "heads do not divide" in capsys.readouterr().err
    assert run(["model", "--help"]) == 0
    assert "dasv model --pooling MHA" in capsys.readouterr().out


# ---------------------------------------------------------------- one declaration of the network options


def test_model_config_needs_no_torch_and_the_cli_starts_without_it() -> None:
    import subprocess
    import sys

    code = ("import sys\nfrom dasv_cli.model import ModelConfig\nimport dasv_cli.train.config\n"
            "from dasv_cli.cli.app import build_app\nbuild_app()\nModelConfig(heads=8)\n"
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_train_config_and_both_commands_derive_their_network_options_from_model_config(capsys) -> None:
    import dataclasses

    from dasv_cli.cli.app import run
    from dasv_cli.model.config import options
    from dasv_cli.train.config import MODEL_FIELDS, TrainConfig, model_config_dict

    declared = {f.name: f for f in dataclasses.fields(ModelConfig)}
    roles = {f.metadata["role"] for f in declared.values()}
    assert roles == {"shape", "training", "data"}
    assert set(MODEL_FIELDS) == {n for n, f in declared.items() if f.metadata["role"] != "data"}
    train_fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for name in MODEL_FIELDS:  # same default, same metadata, and carried into the network
        assert train_fields[name].default == declared[name].default, name
        assert train_fields[name].metadata == declared[name].metadata, name
    changed = dict(front_end="VGG3L", kernel_size=8, pooling="MHA", heads=2, mask_prob=0.1, embedding_size=9,
                   scale=10.0, margin=0.2, annealing=True, numerics="paper", margin_type="aam", margin_warmup=5,
                   init="kaiming", head="linear")
    assert set(changed) == set(MODEL_FIELDS)
    built = ModelConfig.from_dict(model_config_dict(TrainConfig(**changed), num_speakers=3, n_mels=40))
    assert built == ModelConfig(**changed, num_speakers=3, n_mels=40)

    helps = {}
    for command in ("train", "model"):
        assert run([command, "--help"]) == 0
        helps[command] = " ".join(capsys.readouterr().out.replace("│", " ").split())  # rich wraps in a box
    for f in options("shape", "training", "data"):
        flag = "--" + f.name.replace("_", "-")
        text = f.metadata["help"] + ("" if f.default is None else f" [default: {f.default}]")
        assert (flag in helps["train"] and text in helps["train"]) == (f.metadata["role"] != "data"), f.name
        assert (flag in helps["model"] and text in helps["model"]) == (f.metadata["role"] != "training"), f.name


def test_the_poolings_default_to_the_model_config_numerics() -> None:
    from dasv_cli.model import DoubleMHAPooling, MultiHeadAttentionPooling, StatisticalPooling, build_pooling
    from dasv_cli.model.config import DEFAULT_NUMERICS

    assert ModelConfig().numerics == DEFAULT_NUMERICS == "original"
    assert MultiHeadAttentionPooling(8, 2).numerics == DEFAULT_NUMERICS
    assert MultiHeadAttentionPooling(8, 2).scale == math.sqrt(2)  # the original's sqrt(heads)
    assert DoubleMHAPooling(8, 2).drop_probability == pytest.approx(1 / 3)
    assert StatisticalPooling(8).numerics == DEFAULT_NUMERICS
    assert all(build_pooling(name, 8, heads=2).numerics == DEFAULT_NUMERICS
               for name in ("DoubleMHA", "MHA", "Statistical"))
