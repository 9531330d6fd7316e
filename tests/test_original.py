"""Original research-tool checkpoints: restricted loading, name mapping, same embeddings, `dasv convert`."""

from __future__ import annotations

import argparse
import math
import os
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dasv_cli.errors import InputError
from dasv_cli.io.checkpoint import load_checkpoint, save_checkpoint
from dasv_cli.io.original import convert_original, is_original_checkpoint
from dasv_cli.model import ModelConfig, SpeakerNet

torch.set_num_threads(1)

K, HEADS, EMB, SPK = 16, 4, 12, 7  # VGG4L K=16: channels 2, 4, 8, 16; frame vector 16 x 5 = 80


# ------------------------------------------------------------------ an original-layout checkpoint


def original_settings(**over) -> argparse.Namespace:
    """The original tool's argparse options (names as in its train.py)."""
    s = dict(
        front_end="VGG4L", kernel_size=K, embedding_size=EMB, heads_number=HEADS, pooling_method="DoubleMHA",
        mask_prob=0.3, scalingFactor=30.0, marginFactor=0.4, annealing=False, num_spkrs=SPK,
        normalization="cmn", window_size=3.5, learning_rate=0.0001, weight_decay=0.001, batch_size=64,
        gradientAccumulation=2, optimizer="Adam", feature_size=80, model_name="CNN_VGG4L",
    )
    s.update(over)
    return argparse.Namespace(**s)


def original_state_dict(s: argparse.Namespace, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the original SpeakerClassifier's state-dict names and shapes."""
    g = torch.Generator().manual_seed(seed)
    k, e = s.kernel_size, s.embedding_size
    blocks = 4 if s.front_end == "VGG4L" else 3
    chans = [1] + [k // 2 ** (blocks - 1 - i) for i in range(blocks)]
    sd: dict[str, torch.Tensor] = {}

    def r(*shape: int, std: float = 0.3) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std

    for b in range(blocks):
        cin, cout = chans[b], chans[b + 1]
        sd[f"front_end.conv{b + 1}1.weight"] = r(cout, cin, 3, 3, std=1 / math.sqrt(cin * 9))
        sd[f"front_end.conv{b + 1}1.bias"] = r(cout, std=0.05)
        sd[f"front_end.conv{b + 1}2.weight"] = r(cout, cout, 3, 3, std=1 / math.sqrt(cout * 9))
        sd[f"front_end.conv{b + 1}2.bias"] = r(cout, std=0.05)
    bands = math.ceil(80 / 2**blocks)
    d = k * bands
    pooled = d
    if s.pooling_method == "DoubleMHA":
        hs = d // s.heads_number
        sd["poolingLayer.utteranceAttention.query"] = r(hs, s.heads_number)
        sd["poolingLayer.headsAttention.att"] = r(hs, 1)
        pooled = hs
    elif s.pooling_method == "MHA":
        sd["poolingLayer.query"] = r(d // s.heads_number, s.heads_number)
    elif s.pooling_method == "Attention":
        sd["poolingLayer.att"] = r(d, 1)
    elif s.pooling_method == "Statistical":
        pooled = 2 * d
    sd["fc1.weight"], sd["fc1.bias"] = r(e, pooled, std=1 / math.sqrt(pooled)), r(e, std=0.1)
    sd["fc2.weight"], sd["fc2.bias"] = r(e, e, std=1 / math.sqrt(e)), r(e, std=0.1)
    sd["preLayer.weight"], sd["preLayer.bias"] = r(e, e, std=1 / math.sqrt(e)), r(e, std=0.1)
    for bn in ("b1", "b2", "b3"):
        sd[f"{bn}.weight"] = 1 + r(e, std=0.1)
        sd[f"{bn}.bias"] = r(e, std=0.1)
        sd[f"{bn}.running_mean"] = r(e, std=0.2)
        sd[f"{bn}.running_var"] = 0.5 + torch.rand(e, generator=g)
        sd[f"{bn}.num_batches_tracked"] = torch.tensor(1234)
    sd["predictionLayer.W"] = r(e, s.num_spkrs)
    return sd


def write_original(path: Path, s: argparse.Namespace | None = None, sd: dict | None = None, **kw) -> Path:
    s = s if s is not None else original_settings()
    sd = sd if sd is not None else original_state_dict(s)
    torch.save({"model": sd, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]},
                "settings": s, "epoch": 3, "step": 4000}, path, **kw)
    return path


# ------------------------------------------------------------------ the original arithmetic, written out


def original_embedding(sd: dict[str, torch.Tensor], s: argparse.Namespace, x: torch.Tensor) -> torch.Tensor:
    """The original getEmbedding (eval mode) from its equations, in float64 with explicit loops in
    the pooling: VGG blocks, channel-major flattening, MHA scores / sqrt(heads), head attention
    without scaling, then ReLU(fc1) (b1 never applied), b2(ReLU(fc2))."""
    t = {k: v.double() for k, v in sd.items()}
    x = x.double()
    blocks = 4 if s.front_end == "VGG4L" else 3
    h = x.view(x.size(0), x.size(1), 1, x.size(2)).transpose(1, 2)
    for b in range(1, blocks + 1):
        for j in (1, 2):
            h = F.relu(F.conv2d(h, t[f"front_end.conv{b}{j}.weight"], t[f"front_end.conv{b}{j}.bias"], padding=1))
        h = F.max_pool2d(h, 2, stride=2, ceil_mode=True)
    h = h.transpose(1, 2).contiguous()
    h = h.view(h.size(0), h.size(1), h.size(2) * h.size(3))  # [B, T', C*F']
    bsz, frames, d = h.shape
    if s.pooling_method in ("DoubleMHA", "MHA"):
        key = "poolingLayer.utteranceAttention.query" if s.pooling_method == "DoubleMHA" else "poolingLayer.query"
        q = t[key]  # [hs, H]
        n_heads, hs = s.heads_number, d // s.heads_number
        pooled = torch.zeros(bsz, n_heads, hs, dtype=torch.float64)
        for bi in range(bsz):
            for hi in range(n_heads):
                sl = h[bi, :, hi * hs:(hi + 1) * hs]
                scores = torch.stack([sl[ti] @ q[:, hi] for ti in range(frames)]) / math.sqrt(n_heads)
                w = torch.softmax(scores, dim=0)
                pooled[bi, hi] = sum(w[ti] * sl[ti] for ti in range(frames))
        if s.pooling_method == "DoubleMHA":
            att = t["poolingLayer.headsAttention.att"][:, 0]
            out = torch.zeros(bsz, hs, dtype=torch.float64)
            for bi in range(bsz):
                w = torch.softmax(torch.stack([pooled[bi, hi] @ att for hi in range(n_heads)]), dim=0)
                out[bi] = sum(w[hi] * pooled[bi, hi] for hi in range(n_heads))
            pooled = out
        else:
            pooled = pooled.reshape(bsz, d)
    elif s.pooling_method == "Attention":
        att = t["poolingLayer.att"][:, 0]
        w = torch.softmax(h @ att, dim=1)
        pooled = (h * w.unsqueeze(-1)).sum(1)
    else:  # Statistical
        pooled = torch.cat([h.mean(1), h.std(1)], 1)
    e1 = F.relu(pooled @ t["fc1.weight"].T + t["fc1.bias"])
    e2 = F.relu(e1 @ t["fc2.weight"].T + t["fc2.bias"])
    return (e2 - t["b2.running_mean"]) / torch.sqrt(t["b2.running_var"] + 1e-5) * t["b2.weight"] + t["b2.bias"]


def original_am_logits(sd, s, emb: torch.Tensor, labels: torch.Tensor, step: int) -> torch.Tensor:
    """The original AMSoftmax output: s * ((cos_m + a cos) / (1 + a)) after preLayer."""
    t = {k: v.double() for k, v in sd.items()}
    x = emb.double() @ t["preLayer.weight"].T + t["preLayer.bias"]
    w = t["predictionLayer.W"]
    cos = (x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)) @ (w / w.norm(dim=0, keepdim=True).clamp(min=1e-12))
    cos_m = cos - torch.zeros_like(cos).scatter_(1, labels.view(-1, 1), s.marginFactor)
    alpha = max(0.0, 1000.0 / (1.0 + 0.0001 * step) ** 2) if s.annealing else 0.0
    return s.scalingFactor * (cos_m + alpha * cos) / (1 + alpha)


def _converted_net(path: Path) -> tuple[SpeakerNet, dict]:
    ckpt = convert_original(path)
    net = SpeakerNet(ModelConfig.from_dict(ckpt["config"]["model"]))
    net.load_state_dict(ckpt["model"], strict=True)
    return net.eval(), ckpt


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize(
    "over",
    [
        {},
        {"pooling_method": "MHA"},
        {"pooling_method": "Attention"},
        {"pooling_method": "Statistical"},
        {"front_end": "VGG3L", "kernel_size": 8, "heads_number": 2},
    ],
    ids=["DoubleMHA", "MHA", "Attention", "Statistical", "VGG3L"],
)
def test_converted_checkpoint_gives_the_original_embeddings(tmp_path: Path, over: dict) -> None:
    s = original_settings(**over)
    sd = original_state_dict(s, seed=len(over))
    path = write_original(tmp_path / "model.chkpt", s, sd)
    net, ckpt = _converted_net(path)
    assert ckpt["config"]["model"]["numerics"] == "original"
    assert ckpt["config"]["features"]["norm"] == "cmn"
    assert ckpt["step"] == 4000 and ckpt["epoch"] == 3
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(2, 53, 80, generator=g) * 3
    feats = feats - feats.mean(dim=1, keepdim=True)  # CMN, as the original's normalizeFeatures
    ref = original_embedding(sd, s, feats)
    with torch.no_grad():
        out64 = net.double()(feats.double())
        out32 = net.float()(feats)
    assert (out64 - ref).abs().max().item() < 1e-6
    assert (out32.double() - ref).abs().max().item() < 1e-4 * max(1.0, ref.abs().max().item())


@pytest.mark.parametrize("annealing, step", [(False, 0), (True, 0), (True, 25000)])
def test_converted_logits_equal_the_original_am_softmax(tmp_path: Path, annealing: bool, step: int) -> None:
    s = original_settings(annealing=annealing)
    sd = original_state_dict(s)
    net, _ = _converted_net(write_original(tmp_path / "m.chkpt", s, sd))
    net = net.double()
    emb = torch.randn(5, EMB, dtype=torch.float64)
    labels = torch.tensor([0, 3, 6, 2, 3])
    ref = original_am_logits(sd, s, emb, labels, step)
    with torch.no_grad():
        out = net.logits(emb, labels, step=step)
    assert (out - ref).abs().max().item() < 1e-9


def test_legacy_serialisation_and_module_prefix(tmp_path: Path) -> None:
    s = original_settings()
    sd = {f"module.{k}": v for k, v in original_state_dict(s).items()}  # saved from DataParallel
    path = write_original(tmp_path / "legacy.chkpt", s, sd, _use_new_zipfile_serialization=False)
    assert is_original_checkpoint(path)
    net, _ = _converted_net(path)
    plain = {k[7:]: v for k, v in sd.items()}
    feats = torch.randn(1, 40, 80)
    with torch.no_grad():
        assert (net.double()(feats.double()) - original_embedding(plain, s, feats)).abs().max() < 1e-6


class _SideEffect:
    """Unpickling this would run os.system and create a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_globals_are_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    s = original_settings()
    evil = tmp_path / "evil.chkpt"
    torch.save({"model": original_state_dict(s), "settings": _SideEffect(marker), "epoch": 1, "step": 1}, evil)
    raw = tmp_path / "evil.pkl"  # a bare pickle, not torch's format
    raw.write_bytes(pickle.dumps({"model": {}, "settings": _SideEffect(marker)}))
    for path in (evil, raw):
        is_original_checkpoint(path)  # only inspects opcodes
        with pytest.raises(InputError) as err:
            convert_original(path)
        msg = err.value.message
        assert "\n" not in msg and str(path) in msg
        if path == evil:
            assert "refused" in msg and "system" in msg
    assert not marker.exists()


def test_namespace_with_a_foreign_object_is_refused(tmp_path: Path) -> None:
    s = original_settings(extra=Path("/tmp"))  # pathlib is not a plain value
    path = write_original(tmp_path / "m.chkpt", s)
    with pytest.raises(InputError, match="refused.*pathlib"):
        convert_original(path)


def test_wrong_shape_and_missing_tensors_name_the_key(tmp_path: Path) -> None:
    s = original_settings()
    sd = original_state_dict(s)
    sd["poolingLayer.headsAttention.att"] = torch.zeros(7, 1)
    with pytest.raises(InputError, match=r"'poolingLayer\.headsAttention\.att' has shape \[7, 1\], expected \[20, 1\]"):
        convert_original(write_original(tmp_path / "a.chkpt", s, sd))
    sd = original_state_dict(s)
    sd["fc2.weight"] = torch.zeros(EMB, EMB + 1)
    with pytest.raises(InputError, match=r"'fc2\.weight' has shape"):
        convert_original(write_original(tmp_path / "b.chkpt", s, sd))
    sd = original_state_dict(s)
    del sd["front_end.conv32.bias"]
    with pytest.raises(InputError, match=r"no 'front_end\.conv32\.bias'"):
        convert_original(write_original(tmp_path / "c.chkpt", s, sd))
    sd = original_state_dict(s)
    sd["b3.weight"] = torch.zeros(EMB + 2)
    with pytest.raises(InputError, match=r"'b3\.weight'"):
        convert_original(write_original(tmp_path / "d.chkpt", s, sd))
    sd = original_state_dict(s)
    sd["front_end.conv51.weight"] = torch.zeros(1)
    with pytest.raises(InputError, match=r"unexpected tensor 'front_end\.conv51\.weight'"):
        convert_original(write_original(tmp_path / "e.chkpt", s, sd))
    with pytest.raises(InputError, match="not supported"):
        convert_original(write_original(tmp_path / "f.chkpt", original_settings(pooling_method="Attention Statistical"),
                                        original_state_dict(original_settings(pooling_method="Attention"))))


def test_detection_and_round_trip_through_a_dasv_checkpoint(tmp_path: Path) -> None:
    orig = write_original(tmp_path / "m.chkpt")
    assert is_original_checkpoint(orig)
    ckpt = convert_original(orig)
    out = tmp_path / "m.pt"
    save_checkpoint(out, ckpt)
    assert not is_original_checkpoint(out)
    assert not is_original_checkpoint(tmp_path / "missing.chkpt")
    junk = tmp_path / "junk.chkpt"
    junk.write_bytes(b"not a checkpoint at all")
    assert not is_original_checkpoint(junk)
    loaded = load_checkpoint(out)  # weights_only: the converted file holds plain data only
    net = SpeakerNet(ModelConfig.from_dict(loaded["config"]["model"]))
    net.load_state_dict(loaded["model"])
    ref, _ = _converted_net(orig)
    x = torch.randn(2, 33, 80)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), ref(x))
    with pytest.raises(InputError, match="already a dasv checkpoint"):
        convert_original(out)


def test_cli_convert(tmp_path: Path, dasv, capsys) -> None:
    from dasv_cli.cli.app import run

    orig = write_original(tmp_path / "m.chkpt")
    out = tmp_path / "m.pt"
    r = dasv("convert", orig, "-o", out, "--json")  # a real process, as a user runs it
    assert r.code == 0, r.stderr
    assert '"numerics": "original"' in r.stdout
    assert "converted" in r.stderr and out.exists()
    capsys.readouterr()

    assert run(["convert", str(orig), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err
    assert run(["convert", str(orig), "-o", str(out), "--force"]) == 0

    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.chkpt"
    torch.save({"model": {}, "settings": _SideEffect(marker)}, evil)
    capsys.readouterr()
    assert run(["convert", str(evil), "-o", str(tmp_path / "evil.pt")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dasv: error:") and err.strip().count("\n") == 0 and "posix.system" in err
    assert not marker.exists() and not (tmp_path / "evil.pt").exists()

    assert run(["model", "--from", str(out), "--json"]) == 0
    stdout = capsys.readouterr().out
    assert f'"kernel_size": {K}' in stdout and '"numerics": "original"' in stdout
    assert run(["convert", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "dasv convert" in help_text and "-o" in help_text


def test_embeddings_from_a_feature_store_equal_original_get_embedding_after_cmn(tmp_path: Path) -> None:
    """--model accepts the original file directly: dasv's embedding of stored features equals the
    original getEmbedding of the same features after CMN (mean over the whole utterance removed)."""
    import numpy as np

    from dasv_cli.eval import embed  # part of dasv: an import that fails is a failure, never a skip
    from dasv_cli.io.store.reader import FeatureStore
    from dasv_cli.io.store.writer import ShardWriter
    from dasv_cli.dsp.logmel import LogMelConfig

    s = original_settings()
    sd = original_state_dict(s, seed=9)
    orig = write_original(tmp_path / "m.chkpt", s, sd)
    rng = np.random.default_rng(0)
    utts = {"spk1/a": 40, "spk1/b": 57, "spk2/c": 57, "spk2/d": 130}
    feats = {k: (rng.normal(size=(n, 80)) * 2 + 5).astype(np.float32) for k, n in utts.items()}
    (tmp_path / "feats").mkdir()
    with ShardWriter(tmp_path / "feats", LogMelConfig().to_dict()) as writer:
        for k, f in feats.items():
            writer.add(k, f, f.mean(0), f.std(0), f.shape[0] * 160)
    store = FeatureStore(tmp_path / "feats")
    model, ckpt = embed.load_extractor(orig)
    assert ckpt["config"]["model"]["numerics"] == "original"
    got = embed.embed_store(model, store, list(utts), norm="cmn", progress=False)
    store.close()
    for i, (k, f) in enumerate(feats.items()):
        x = torch.from_numpy(f.astype(np.float64) - f.astype(np.float64).mean(0)).unsqueeze(0)
        ref = original_embedding(sd, s, x)[0]
        assert np.abs(got[i] - ref.numpy()).max() < 1e-4, k


def test_the_expected_shapes_are_the_networks_state_dict() -> None:
    """io computes the converted state dict's names and shapes by arithmetic (it never builds a
    network): they must be SpeakerNet's, in its order, for every front-end, pooling and size."""
    import itertools

    from dasv_cli.io.original_layout import expected_shapes

    checked = 0
    for front_end, k, pooling, heads, n_mels in itertools.product(
            ["VGG3L", "VGG4L"], [8, 16, 64], ["DoubleMHA", "MHA", "Attention", "Statistical"], [1, 2, 5], [80, 23]):
        try:
            cfg = ModelConfig(front_end=front_end, kernel_size=k, pooling=pooling, heads=heads, embedding_size=7,
                              n_mels=n_mels, num_speakers=3, numerics="original")
        except ValueError:  # heads that do not divide the frame vector
            continue
        with torch.device("meta"):
            sd = SpeakerNet(cfg).state_dict()
        shapes = expected_shapes(cfg.to_dict())
        assert list(shapes) == list(sd), cfg
        assert {n: tuple(t.shape) for n, t in sd.items()} == shapes, cfg
        checked += 1
    assert checked > 60
