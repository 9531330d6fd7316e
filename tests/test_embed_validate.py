"""Embedding extraction (exact, one per utterance), `dasv embed`, `dasv validate`, `dasv score --model`."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dasv_cli.dsp.logmel import LogMelConfig, logmel, normalise, utterance_stats
from dasv_cli.errors import InputError
from dasv_cli.eval import embed as engine
from dasv_cli.eval.scoring import cosine_scores
from dasv_cli.eval.validation import evaluate_trials
from dasv_cli.io.audio import load_audio
from dasv_cli.io.checkpoint import save_checkpoint
from dasv_cli.io.embeddings import read_embeddings
from dasv_cli.io.lists import Trials
from dasv_cli.io.store.lock import StoreLock
from dasv_cli.io.store.reader import FeatureStore
from dasv_cli.io.store.writer import ShardWriter
from dasv_cli.model import ModelConfig, SpeakerNet
from conftest import run_inprocess  # tests/ is on sys.path

SPEAKERS = 4
PER_SPEAKER = 3


def tiny_checkpoint(path: Path, calibration: np.ndarray, seed: int = 0, norm: str = "cmn") -> Path:
    """A ~6k-parameter SpeakerNet saved in the contract's layout. Its BatchNorm statistics are measured
    on `calibration` windows [B, T, 80], so embeddings spread like a trained model's instead of all
    sitting near one point (which would make every comparison below pass trivially)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(kernel_size=16, heads=4, embedding_size=16, num_speakers=8)
    net = SpeakerNet(cfg)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration pass
    net.train()
    with torch.no_grad():
        net(torch.from_numpy(calibration))
    net.eval()
    save_checkpoint(path, {
        "config": {"model": cfg.to_dict(), "train": {"seed": seed},
                   "features": {"norm": norm, "recipe": LogMelConfig().to_dict()}},
        "model": net.state_dict(), "optimizer": None, "speakers": None, "step": 10 * seed, "epoch": 0,
        "best_eer": None, "rng": None,
    })
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory, demo_dir):
    """A feature store (12 demo utterances + 4 equal-length crops + 1 very short one), an audio list
    for the same demo files, a trial list over the demo utterances, and two tiny checkpoints."""
    import soundfile as sf

    d = tmp_path_factory.mktemp("embed")
    sources = [f for spk in sorted(demo_dir.iterdir()) if spk.is_dir()
               for f in sorted(spk.glob("*.flac"))[:PER_SPEAKER]][: SPEAKERS * PER_SPEAKER]
    # Short copies (2, 2.25 or 2.5 s) keep the test fast and give groups of equal length.
    audio_dir = d / "audio"
    files = []
    for i, f in enumerate(sources):
        wave, rate = sf.read(f, dtype="int16")
        out = audio_dir / f.parent.name / f.name
        out.parent.mkdir(parents=True, exist_ok=True)
        sf.write(out, wave[: int(rate * (2.0 + 0.25 * (i % 3)))], rate, subtype="PCM_16")
        files.append(out)
    cfg = LogMelConfig()
    store_dir = d / "feats"
    store_dir.mkdir()
    keys = []
    with StoreLock(store_dir), ShardWriter(store_dir, cfg.to_dict()) as w:
        first = None
        for f in files:
            wave = load_audio(f)
            x = logmel(wave, cfg)
            key = f"{f.parent.name}/{f.stem}"
            w.add(key, x, *utterance_stats(x), len(wave))
            keys.append(key)
            first = x if first is None else first
        for i in range(4):  # equal-length crops of one utterance
            x = np.ascontiguousarray(first[20 * i: 20 * i + 150])
            w.add(f"crop/{i}", x, *utterance_stats(x), 150 * 160)
        x = np.ascontiguousarray(first[:10])  # shorter than VGG4L's 16 frames
        w.add("short/x", x, *utterance_stats(x), 10 * 160)
    (d / "audio.lst").write_text("".join(f"{f.parent.name}/{f.name}\n" for f in files))
    with open(d / "trials.txt", "w") as fh:
        for a, b in itertools.combinations(keys, 2):
            fh.write(f"{int(a.split('/')[0] == b.split('/')[0])} {a} {b}\n")
    store = FeatureStore(store_dir)
    calibration = np.stack([normalise(store.window(k, 0, 190), *store.stats(k), "cmn") for k in keys]).astype(np.float32)
    store.close()
    ckpts = d / "ckpts"
    tiny_checkpoint(ckpts / "a.pt", calibration, seed=0)
    tiny_checkpoint(ckpts / "b.pt", calibration, seed=1)
    return {"dir": d, "store": store_dir, "keys": keys, "model": ckpts / "a.pt", "ckpts": ckpts,
            "audio_dir": audio_dir}


def reference_embedding(model, store, key, norm="cmn"):
    """One utterance on its own, straight through the network."""
    f = normalise(store[key], *store.stats(key), norm)
    f = engine.fit_min_frames(np.asarray(f, np.float32), model.min_frames)
    with torch.no_grad():
        return model(torch.from_numpy(f)[None]).numpy()[0]


def test_length_batches_only_group_equal_lengths():
    lengths = [50, 30, 50, 50, 30, 7, 50]
    batches = engine.length_batches(lengths, max_frames=100, max_batch=64)
    for b in batches:
        assert len({lengths[i] for i in b}) == 1 and sum(lengths[i] for i in b) <= max(100, lengths[b[0]])
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))


def test_embedding_does_not_depend_on_batch_mates(lab):
    model, ckpt = engine.load_extractor(lab["model"])
    store = FeatureStore(lab["store"])
    keys = store.keys()
    batched = engine.embed_store(model, store, keys, progress=False)
    one_by_one = engine.embed_store(model, store, keys, progress=False, max_batch=1)
    assert batched.shape == (len(keys), 16) and np.isfinite(batched).all()
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-4, atol=1e-4)
    for i, key in enumerate(keys):
        np.testing.assert_allclose(batched[i], reference_embedding(model, store, key), rtol=1e-4, atol=1e-4)
    # The crops really were batched together, and distinct inputs give distinct embeddings.
    crops = [keys.index(f"crop/{i}") for i in range(4)]
    assert any(len(b) == 4 for b in engine.length_batches([store.length(k) for k in keys]))
    assert np.linalg.norm(batched[crops[0]] - batched[crops[1]]) > 0.01  # 100x the tolerance above
    # The order of the keys asked for is the order of the rows.
    rev = engine.embed_store(model, store, keys[::-1], progress=False)
    np.testing.assert_allclose(rev[::-1], batched, atol=1e-6)
    # Normalisation follows the argument (CMVN gives other vectors than CMN).
    cmvn = engine.embed_store(model, store, keys[:2], norm="cmvn", progress=False)
    np.testing.assert_allclose(cmvn[0], reference_embedding(model, store, keys[0], "cmvn"), rtol=1e-4, atol=1e-4)
    assert np.linalg.norm(cmvn[0] - batched[0]) > 0.01  # 100x the tolerance of the comparisons above
    store.close()


def test_evaluate_trials_for_training_validation(lab):
    model, _ = engine.load_extractor(lab["model"])
    store = FeatureStore(lab["store"])
    keys = lab["keys"]
    pairs = list(itertools.combinations(keys, 2))
    trials = Trials([a for a, _ in pairs], [b for _, b in pairs],
                    np.array([a.split("/")[0] == b.split("/")[0] for a, b in pairs], np.int8))
    model.train()
    m = evaluate_trials(model, store, trials, norm="cmn")
    assert model.training  # left as found
    model.eval()
    vectors = np.stack([reference_embedding(model, store, k) for k in keys])
    expected = cosine_scores(keys, vectors, trials)
    from dasv_cli.eval.metrics import compute_metrics

    assert m.eer == pytest.approx(compute_metrics(expected, trials.labels).eer, abs=1e-6)
    assert m.trials == len(pairs) and m.targets == SPEAKERS * 3
    with pytest.raises(InputError, match="not in the feature store"):
        evaluate_trials(model, store, Trials(["nope"], [keys[0]], np.array([1], np.int8)))
    store.close()


def test_load_extractor_refuses_bad_files(tmp_path, lab):
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint\n")
    with pytest.raises(InputError, match="junk.pt"):
        engine.load_extractor(junk)
    ckpt = torch.load(lab["model"], weights_only=True)
    ckpt["config"]["model"]["embedding_size"] = 32
    save_checkpoint(tmp_path / "wrong.pt", ckpt)
    with pytest.raises(InputError, match="weights do not fit"):
        engine.load_extractor(tmp_path / "wrong.pt")
    with pytest.raises(InputError, match="no such checkpoint"):
        engine.load_extractor(tmp_path / "absent.pt")


# ----------------------------------------------------------------------------- the CLI


def test_embed_table_then_rerun_computes_only_missing(lab, tmp_path):
    keys_file = tmp_path / "some.lst"
    keys_file.write_text("".join(k + "\n" for k in lab["keys"][:3]))
    out = tmp_path / "emb.h5"
    r = run_inprocess("embed", "--model", lab["model"], "--features", lab["store"], "--keys", keys_file, "-o", out,
                      "--device", "cpu")
    assert r.code == 0, r.stderr
    first = read_embeddings(out)
    assert first.keys == lab["keys"][:3] and first.dim == 16
    assert first.attrs["checkpoint_sha256"] and first.attrs["norm"] == "cmn"
    r = run_inprocess("embed", "--model", lab["model"], "--features", lab["store"], "-o", out)
    assert r.code == 0, r.stderr
    assert "3 embeddings already there; computing 14 missing" in r.stderr
    full = read_embeddings(out)
    assert len(full) == 17 and full.keys[:3] == first.keys
    np.testing.assert_array_equal(full.vectors[:3], first.vectors)
    # The same output from another checkpoint is refused, not mixed.
    r = run_inprocess("embed", "--model", lab["ckpts"] / "b.pt", "--features", lab["store"], "-o", out)
    assert r.code == 1 and "holds embeddings from another checkpoint" in r.stderr


def test_embed_text_pipeline_and_score_from_it(lab, tmp_path):
    """`dasv embed ... -o - | dasv score ... -e -` and `cat trials | dasv score --trials - -e emb.txt`
    in a real shell, as a user types them."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    py = sys.executable
    trials = lab["dir"] / "trials.txt"
    cmd = (f"{py} -m dasv_cli embed --model {lab['model']} --features {lab['store']} -o - -q "
           f"| tee emb.txt | {py} -m dasv_cli score --trials {trials} -e - --json")
    p = subprocess.run(cmd, shell=True, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    piped = json.loads(p.stdout)
    assert piped["trials"] == 66 and piped["targets"] == SPEAKERS * 3
    lines = (tmp_path / "emb.txt").read_text().splitlines()
    assert len(lines) == 17 and {len(line.split()) for line in lines} == {17}  # key + 16 numbers
    cmd = f"cat {trials} | {py} -m dasv_cli score --trials - -e emb.txt --json"
    p = subprocess.run(cmd, shell=True, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["eer"] == pytest.approx(piped["eer"])


def test_embed_audio_matches_features(lab, tmp_path):
    r = run_inprocess("embed", "--model", lab["model"], "--audio", lab["dir"] / "audio.lst",
                      "--audio-dir", lab["audio_dir"], "-o", tmp_path / "audio.h5")
    assert r.code == 0, r.stderr
    from_audio = read_embeddings(tmp_path / "audio.h5")
    model, _ = engine.load_extractor(lab["model"])
    store = FeatureStore(lab["store"])
    assert from_audio.keys == lab["keys"]
    for key in lab["keys"]:
        np.testing.assert_allclose(from_audio.get(key), reference_embedding(model, store, key), rtol=1e-4, atol=1e-4)
    store.close()
    # A broken file is listed; the rest is embedded; exit code 3.
    (tmp_path / "bad.flac").write_bytes(b"not audio")
    lst = tmp_path / "mixed.lst"
    lst.write_text(f"{lab['audio_dir'] / lab['keys'][0]}.flac\n{tmp_path / 'bad.flac'}\n")
    r = run_inprocess("embed", "--model", lab["model"], "--audio", lst, "-o", tmp_path / "mixed.npy")
    assert r.code == 3 and "bad.flac" in r.stderr, r.stderr
    assert np.load(tmp_path / "mixed.npy").shape == (1, 16)
    assert (tmp_path / "mixed.keys.txt").read_text().strip().endswith(lab["keys"][0])


def test_validate_one_checkpoint_and_a_directory_ranked(lab, tmp_path):
    d = lab["dir"]
    clients = tmp_path / "clients.lst"
    impostors = tmp_path / "impostors.lst"
    lines = [line.split() for line in (d / "trials.txt").read_text().splitlines()]
    clients.write_text("".join(f"{a} {b}\n" for y, a, b in lines if y == "1"))
    impostors.write_text("".join(f"{a} {b}\n" for y, a, b in lines if y == "0"))
    r = run_inprocess("validate", "--model", lab["model"], "--features", lab["store"], clients, impostors,
                      "--json", "-q")
    assert r.code == 0, r.stderr
    single = json.loads(r.stdout)
    assert single["trials"] == 66 and single["targets"] == 12 and "eer" in single
    assert "EER" in r.stderr
    # Same numbers from `dasv score --model --features`.
    r = run_inprocess("score", "--trials", d / "trials.txt", "--model", lab["model"], "--features", lab["store"],
                      "--json", "-q")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["eer"] == pytest.approx(single["eer"])
    # A directory: every checkpoint ranked by EER; an unreadable one is reported, exit 3.
    ck = tmp_path / "ck"
    ck.mkdir()
    for name in ("a.pt", "b.pt"):
        (ck / name).write_bytes((lab["ckpts"] / name).read_bytes())
    (ck / "broken.pt").write_text("junk")
    r = run_inprocess("validate", "--model", ck, "--features", lab["store"], "--trials", d / "trials.txt", "-q")
    assert r.code == 3, r.stderr
    rows = [line.split("\t") for line in r.stdout.splitlines()]
    assert rows[0][:3] == ["rank", "checkpoint", "eer"] and len(rows) == 3
    eers = [float(row[2]) for row in rows[1:]]
    assert eers == sorted(eers) and {Path(row[1]).name for row in rows[1:]} == {"a.pt", "b.pt"}
    assert "broken.pt: skipped" in r.stderr and "best:" in r.stderr


def test_interrupted_embed_keeps_finished_batches(lab, tmp_path, monkeypatch):
    """Ctrl-C halfway: the batches already embedded are in the table; a rerun computes the rest."""
    from dasv_cli.cli.embed import embed

    real = engine.iter_store_embeddings

    def interrupted(*args, **kwargs):
        for n, item in enumerate(real(*args, **kwargs)):
            if n == 2:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(engine, "iter_store_embeddings", interrupted)
    out = tmp_path / "part.h5"
    options = dict(model=lab["model"], features=lab["store"], audio=None, audio_dir=None, keys=None,
                   output=str(out), device="cpu", max_frames=4000, chunk_seconds=10.0, vad=False, quiet=True)
    with pytest.raises(KeyboardInterrupt):
        embed(**options)
    part = read_embeddings(out)
    assert 0 < len(part) < 17
    monkeypatch.setattr(engine, "iter_store_embeddings", real)
    embed(**options)
    full = read_embeddings(out)
    assert len(full) == 17 and full.keys[: len(part)] == part.keys
    np.testing.assert_array_equal(full.vectors[: len(part)], part.vectors)


def test_first_ctrl_c_stops_embed_after_the_batch_in_flight(lab, tmp_path, monkeypatch):
    """The first Ctrl-C only asks to stop: no KeyboardInterrupt surfaces inside whatever runs then (here
    a string exec, as a lazily imported dataclass runs; CPython would remember an interrupt there as
    unhandled and end `python -m dasv_cli` by SIGINT after exit 130), the batch in flight is finished
    and saved, nothing after it is computed, and SIGINT is given back."""
    import signal
    import threading

    from dasv_cli.eval.embed_run import run_embed

    real = engine.iter_store_embeddings
    sizes: list[int] = []
    ran: list[int] = []

    def ctrl_c_in_second_batch(*args, **kwargs):
        for n, (keys, vectors) in enumerate(real(*args, **kwargs)):
            if n == 1:
                signal.pthread_kill(threading.get_ident(), signal.SIGINT)
                namespace: dict = {}
                exec("total = sum(range(1000))", namespace)
                ran.append(namespace["total"])
            sizes.append(len(keys))
            yield keys, vectors

    monkeypatch.setattr(engine, "iter_store_embeddings", ctrl_c_in_second_batch)
    before = signal.getsignal(signal.SIGINT)
    out = tmp_path / "ctrl-c.h5"
    with pytest.raises(KeyboardInterrupt):
        run_embed(lab["model"], features=lab["store"], output=str(out), device="cpu", max_frames=200,
                  progress=False)
    assert ran == [499500], "the interrupt surfaced inside the exec"
    assert len(sizes) == 2 and len(read_embeddings(out)) == sum(sizes) < 17
    assert signal.getsignal(signal.SIGINT) is before


def test_embed_usage_errors(lab):
    from dasv_cli.devices import resolve_device
    from dasv_cli.errors import UsageError

    r = run_inprocess("embed", "--model", lab["model"])
    assert r.code == 2 and "exactly one of --features DIR or --audio LIST" in r.stderr
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="--device cuda: no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(UsageError, match="--device cuda:7"):
        resolve_device("cuda:7")
    with pytest.raises(UsageError, match="expected cpu, cuda"):
        resolve_device("tpu")
    r = run_inprocess("embed", "--help")
    assert r.code == 0 and "dasv embed --model best.pt --features feats/" in r.stdout
    r = run_inprocess("validate", "--help")
    assert r.code == 0 and "dasv validate --model best.pt" in r.stdout


def test_embedding_turns_cudnn_autotuning_off_and_back(lab, monkeypatch):
    """Training turns cuDNN autotuning on for its fixed windows; validation and embedding then see
    hundreds of utterance lengths, each of which would be autotuned first: off while embedding."""
    model, _ = engine.load_extractor(lab["model"])
    seen = []
    forward = model.forward

    def spy(x):
        seen.append(torch.backends.cudnn.benchmark)
        return forward(x)

    monkeypatch.setattr(model, "forward", spy)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    store = FeatureStore(lab["store"])
    try:
        engine.embed_store(model, store, lab["keys"][:3], progress=False)
    finally:
        store.close()
    assert seen and not any(seen)
    assert torch.backends.cudnn.benchmark is True  # as it was found
