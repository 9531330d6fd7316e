"""The modern recipe's parts: AAM-Softmax and margin warm-up, Kaiming init, the LR schedule,
SpecAugment masks, `--recipe` resolution, `--augmented` copies, `--init-from`, and exact resume
with all of them on (tiny network, the bundled demo speech)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dasv_cli.errors import InputError, UsageError
from dasv_cli.model import AAMSoftmax, AMSoftmax, ModelConfig, SpeakerNet
from dasv_cli.train.config import TrainConfig, resolve_config
from dasv_cli.train.schedule import lr_at
from dasv_cli.train.specaugment import FREQ_WIDTH, TIME_WIDTH, spec_augment
from conftest import StopAt, read_metrics, tiny_config  # tests/ is on sys.path

MODERN = dict(recipe="modern", max_steps=12)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def augmented(tmp_path_factory, data) -> Path:
    """A copy of the demo store with a `#reverb`-like and a `#speed0.9` copy of every utterance (the
    features shifted and stretched: what matters here is which keys and labels training draws)."""
    from dasv_cli.io.store.reader import FeatureStore
    from dasv_cli.io.store.writer import ShardWriter

    root = tmp_path_factory.getbasetemp() / "train-demo-augmented"
    if (root / "labels.txt").exists():
        return root
    root.mkdir()
    src = FeatureStore(data / "feats")
    with ShardWriter(root / "feats", dict(src.recipe)) as writer:
        for key in src.keys():
            feats = np.asarray(src[key], dtype=np.float32)
            for kind, x in (("", feats), ("#reverb", feats + 0.5), ("#speed0.9", np.repeat(feats, 2, axis=0)[::2])):
                writer.add(key + kind, x, x.mean(axis=0), x.std(axis=0), 16000)
    src.close()
    for name in ("labels.txt", "trials.txt"):
        (root / name).write_text((data / name).read_text())
    return root


# ------------------------------------------------------------------------------------------ margins


def test_aam_logits_are_scaled_cos_of_theta_plus_margin_and_margin_free_inverts_both():
    torch.manual_seed(0)
    x = torch.randn(64, 6)
    labels = torch.randint(0, 5, (64,))
    labels[:5] = torch.arange(5)
    for cls in (AMSoftmax, AAMSoftmax):
        head = cls(6, 5, scale=30.0, margin=0.3)
        with torch.no_grad():  # some rows opposite their target: the AAM fallback branch is used too
            head.weight[:5] = -x[:5]
        cos = head.cosine(x)
        logits = head(x, labels)
        rows = torch.arange(64)
        off = torch.ones_like(cos, dtype=torch.bool)
        off[rows, labels] = False
        assert torch.allclose(logits[off], 30 * cos[off])  # other classes carry no margin
        target = cos[rows, labels]
        if cls is AMSoftmax:
            want = target - 0.3
        else:
            theta = torch.arccos(target.clamp(-1, 1))
            want = torch.where(theta + 0.3 < math.pi, torch.cos(theta + 0.3), target - 0.3 * math.sin(0.3))
            assert (theta[:5] + 0.3 >= math.pi).all()  # the fallback rows
        assert torch.allclose(logits[rows, labels], 30 * want, atol=1e-4)
        assert torch.allclose(head.margin_free(logits, labels), 30 * cos, atol=2e-3)
        assert torch.allclose(head(x), 30 * cos)  # no labels: no margin


def test_margin_warmup_ramps_linearly_and_an_aam_margin_of_zero_is_plain():
    head = AAMSoftmax(4, 3, margin=0.2, margin_warmup=10)
    assert [head.margin_factor(s) for s in (0, 5, 10, 1000)] == [0.0, 0.5, 1.0, 1.0]
    x, labels = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    assert torch.allclose(head(x, labels, step=0), head(x))
    assert not torch.allclose(head(x, labels, step=5), head(x))
    with pytest.raises(ValueError, match="angular margin"):
        ModelConfig(margin_type="aam", margin=2.0)


def test_kaiming_init_draws_he_normal_conv_and_linear_weights_with_zero_biases():
    cfg = ModelConfig(kernel_size=64, heads=4, embedding_size=32, num_speakers=10)
    torch.manual_seed(0)
    plain = SpeakerNet(cfg)
    torch.manual_seed(0)
    net = SpeakerNet(cfg.replace(init="kaiming"))
    conv = net.front_end.conv41  # 64 x 32 x 3 x 3: fan-out 64 x 9
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.05)
    assert torch.count_nonzero(conv.bias) == 0 and torch.count_nonzero(net.fc1.bias) == 0
    assert net.fc2.weight.std().item() == pytest.approx(math.sqrt(2 / 32), rel=0.1)
    assert not torch.equal(plain.front_end.conv41.weight, conv.weight)
    assert torch.equal(plain.bn2.weight, net.bn2.weight)  # BatchNorm keeps its own


# ------------------------------------------------------------------------------------------ schedule


def test_lr_warms_up_then_decays_to_the_floor_at_max_steps():
    lr = [lr_at(s, 1.0, "cosine", warmup=10, total=110, min_ratio=0.01) for s in range(111)]
    assert lr[0] == pytest.approx(0.1) and lr[8] == pytest.approx(0.9) and lr[9] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(lr[9:110], lr[10:110]))
    assert lr[59] == pytest.approx(0.505) and lr[109] == pytest.approx(0.01) and lr[110] == pytest.approx(0.01)
    assert lr_at(59, 1.0, "exponential", 10, 110, 0.01) == pytest.approx(0.1)
    assert lr_at(500, 1e-3, "constant", plateau_scale=0.25) == pytest.approx(2.5e-4)
    assert lr_at(500, 1.0, "cosine", 10, 110, 0.01) == pytest.approx(0.01)  # past max_steps: the floor


# ------------------------------------------------------------------------------------------ masks


def test_spec_augment_masks_whole_bands_and_frames_deterministically_and_spares_the_global_rng():
    feats = torch.randn(16, 200, 80) + 5.0
    torch.manual_seed(3)
    before = torch.get_rng_state()
    out = spec_augment(feats, seed=1, rank=0, step=7, micro=0)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(out, spec_augment(feats, 1, 0, 7, 0))
    assert not torch.equal(out, spec_augment(feats, 1, 0, 8, 0))
    assert not torch.equal(out, spec_augment(feats, 1, 1, 7, 0))  # another rank, other masks
    zero = out == 0
    kept = ~zero
    assert torch.equal(out[kept], feats[kept])  # nothing but the masks changes
    masked_any = False
    for b in range(16):
        bands = zero[b].all(dim=0)  # a masked band is zero in every frame
        frames = zero[b].all(dim=1)
        assert torch.equal(zero[b], bands.unsqueeze(0) | frames.unsqueeze(1))  # masks where asked, only there
        assert bands.sum() <= 2 * FREQ_WIDTH and frames.sum() <= 2 * TIME_WIDTH
        masked_any |= bool(bands.any()) and bool(frames.any())
    assert masked_any


# ------------------------------------------------------------------------------------------ recipes


def test_flags_beat_toml_beat_recipe_beat_defaults(tmp_path):
    base = dict(train_labels="l", features="f", out="o")
    paper, _ = resolve_config(base, cwd=tmp_path)
    assert paper == TrainConfig(train_labels="l", features="f", out="o")
    modern, _ = resolve_config({**base, "recipe": "modern", "max_steps": 1000}, cwd=tmp_path)
    assert (modern.augmented, modern.spec_augment, modern.margin_type, modern.margin, modern.init) == \
        (False, True, "aam", 0.2, "kaiming")  # copies: --augmented (they hurt on unseen speakers)
    assert (modern.lr_schedule, modern.lr_warmup, modern.margin_warmup) == ("cosine", 50, 200)
    (tmp_path / "dasv.toml").write_text('recipe = "modern"\nmax_steps = 100\nmargin = 0.3\nspec_augment = false\n')
    cfg, source = resolve_config({**base, "margin": 0.35}, cwd=tmp_path)
    assert source == tmp_path / "dasv.toml"
    assert cfg.recipe == "modern" and cfg.margin == 0.35 and cfg.spec_augment is False and not cfg.augmented
    assert cfg.lr_warmup == 5
    with pytest.raises(UsageError, match="--max-steps"):
        resolve_config({**base, "recipe": "modern"}, cwd=tmp_path / "nowhere")
    with pytest.raises(UsageError, match="recipe"):
        resolve_config({**base, "recipe": "fancy"}, cwd=tmp_path / "nowhere")
    with pytest.raises(UsageError, match="--max-steps"):
        resolve_config({**base, "lr_schedule": "cosine"}, cwd=tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------ copies


def test_augmented_copies_join_with_the_clean_label_and_speed_copies_are_new_speakers(augmented, tmp_path):
    from dasv_cli.train.inputs import prepare_data

    clean = prepare_data(tiny_config(augmented, tmp_path / "a"))
    assert len(clean.keys) == 40 and clean.num_speakers == 8 and not any("#" in k for k in clean.keys)
    data = prepare_data(tiny_config(augmented, tmp_path / "b", augmented=True))
    assert len(data.keys) == 120 and data.num_speakers == 16
    label = dict(zip(data.keys, data.labels.tolist()))
    for key in clean.keys:
        assert label[key + "#reverb"] == label[key]
        assert label[key + "#speed0.9"] == label[key] + 8
    assert data.speakers[8:] == [f"{s}#speed0.9" for s in clean.speakers]
    assert data.lengths[data.keys.index(clean.keys[0] + "#reverb")] == clean.lengths[0]


# ------------------------------------------------------------------------------------------ runs


def test_modern_run_resumed_mid_run_equals_the_uninterrupted_one(augmented, tmp_path):
    from dasv_cli.train.loop import Trainer, train
    from dasv_cli.train.resume import resumed_config

    over = dict(MODERN, augmented=True, valid_trials=str(augmented / "trials.txt"), validate_every=4,
                lr_warmup=3, margin_warmup=6)
    ref = train(tiny_config(augmented, tmp_path / "ref", **over))
    assert ref.step == 12
    stopper = type("Stopper", (StopAt, Trainer), {})
    first = train(tiny_config(augmented, tmp_path / "cut", **over), trainer_cls=stopper)
    assert first.reason == "interrupted" and first.step == 5
    again = train(resumed_config(tiny_config(augmented, tmp_path / "cut", resume=True), {}))
    assert again.step == 12
    a = torch.load(tmp_path / "ref" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert a["best_eer"] == b["best_eer"] and a["config"]["model"]["margin_type"] == "aam"
    assert a["model"]["am_softmax.weight"].shape[0] == 16  # speed copies: 8 more speakers
    lrs = {r["step"]: r["lr"] for r in read_metrics(tmp_path / "ref") if "loss" in r}
    assert lrs[2] == pytest.approx(0.01 * 2 / 3)  # the LR of update 2 of a 3-update warm-up
    assert lrs[12] == pytest.approx(0.01 * 0.01)  # the floor at the last update
    assert lrs[12] == pytest.approx({r["step"]: r["lr"] for r in read_metrics(tmp_path / "cut") if "loss" in r}[12])


def test_same_seed_same_modern_run_and_spec_augment_changes_it(data, tmp_path):
    from dasv_cli.train.loop import train

    runs = {}
    for name, over in (("a", {}), ("b", {}), ("plain", {"spec_augment": False})):
        train(tiny_config(data, tmp_path / name, **MODERN, **over))
        runs[name] = torch.load(tmp_path / name / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not all(torch.equal(runs["a"][k], runs["plain"][k]) for k in runs["a"])


def test_init_from_takes_the_weights_into_a_new_run_and_redraws_a_classifier_of_other_speakers(data, tmp_path):
    from dasv_cli.train.inputs import prepare_data
    from dasv_cli.train.loop import train
    from dasv_cli.train.network import build_model
    from dasv_cli.train.ranks import RunContext
    from dasv_cli.train.start import initial_network
    from dasv_cli.train.state import init_weights

    train(tiny_config(data, tmp_path / "first", max_steps=4))
    best = tmp_path / "first" / "last.pt"
    trained = torch.load(best, weights_only=True)["model"]
    # fewer speakers: the first six of the demo's eight
    lines = [ln for ln in (data / "labels.txt").read_text().splitlines() if ln.split()[1] <= sorted(
        {x.split()[1] for x in (data / "labels.txt").read_text().splitlines()})[5]]
    (tmp_path / "six.txt").write_text("\n".join(lines) + "\n")
    given = dict(init_from=str(best), margin=0.5, window_seconds=1.5, max_steps=3)
    cfg = initial_network(tiny_config(data, tmp_path / "tune", **given, train_labels=str(tmp_path / "six.txt"),
                                  kernel_size=32), {k: v for k, v in given.items()})
    assert cfg.kernel_size == 16  # the shape comes from the checkpoint unless typed
    d = prepare_data(cfg)
    assert d.num_speakers == 6
    net = build_model(cfg, d.num_speakers, d.n_mels)
    fresh = net.am_softmax.weight.detach().clone()
    init_weights(best, cfg, d, net, RunContext(device="cpu"))
    own = net.state_dict()
    for k, v in trained.items():
        if k != "am_softmax.weight":
            assert torch.equal(own[k], v), k
    assert own["am_softmax.weight"].shape == (6, 16) and torch.equal(own["am_softmax.weight"], fresh)
    result = train(cfg)
    assert result.step == 3 and result.reason == "max_steps"  # a new run: its own step count
    tuned = torch.load(tmp_path / "tune" / "last.pt", weights_only=True)
    assert tuned["config"]["train"]["margin"] == 0.5 and tuned["config"]["train"]["init_from"] == str(best)
    wrong = tiny_config(data, tmp_path / "wrong", init_from=str(best), max_steps=2, heads=2)
    with pytest.raises(InputError, match="do not fit"):
        train(wrong)
    with pytest.raises(UsageError, match="one of them"):
        from dasv_cli.train.start import start

        start({"init_from": str(best), "resume": True, "out": str(tmp_path / "first")})
