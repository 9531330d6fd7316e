"""`dasv enroll` and `dasv compare TEST --speakers`: a speakers table in the embedding-table format."""

from __future__ import annotations


import numpy as np
import pytest

from dasv_cli.eval.compare import AudioEmbedder
from dasv_cli.eval.cosine import l2_normalise
from dasv_cli.io.embeddings import read_embeddings
from test_export import demo_waves, save_tiny_checkpoint, tiny_net


def cli(capsys, *args):
    from dasv_cli.cli.app import run

    capsys.readouterr()
    code = run([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_enroll_add_replace_rank_and_refuse_another_model(demo_files, tmp_path, capsys, dasv) -> None:
    waves = demo_waves(demo_files, 3)
    ckpt, other = tmp_path / "best.pt", tmp_path / "other.pt"
    save_tiny_checkpoint(ckpt, tiny_net(waves, "cmn", seed=4), "cmn")
    save_tiny_checkpoint(other, tiny_net(waves, "cmn", seed=5), "cmn")
    x = [str(p) for p in demo_files[0:5]]   # one speaker
    y = [str(p) for p in demo_files[5:10]]  # another
    table = tmp_path / "speakers.h5"
    emb = AudioEmbedder(ckpt, "cpu")
    vec = emb.embed_paths(x + y)

    def mean_of(files):
        return l2_normalise(np.stack([vec[f] for f in files])).mean(axis=0)

    code, _, err = cli(capsys, "enroll", "xavier", x[0], x[1], "--model", ckpt, "-o", table)
    assert code == 0, err
    assert "xavier enrolled from 2 recording(s)" in err
    code, _, err = cli(capsys, "enroll", "yvonne", *y[:3], "--model", ckpt, "-o", table)
    assert code == 0, err
    t = read_embeddings(table)
    assert t.keys == ["xavier", "yvonne"] and t.attrs["checkpoint"] == str(ckpt.resolve())
    np.testing.assert_allclose(t.get("xavier"), mean_of(x[:2]), atol=1e-6)
    np.testing.assert_allclose(t.get("yvonne"), mean_of(y[:3]), atol=1e-6)
    code, _, err = cli(capsys, "enroll", "xavier", x[2], x[3], "--model", ckpt, "-o", table)
    assert code == 0 and "re-enrolled" in err and "holds 2 speaker(s)" in err
    t = read_embeddings(table)
    assert sorted(t.keys) == ["xavier", "yvonne"]
    np.testing.assert_allclose(t.get("xavier"), mean_of(x[2:4]), atol=1e-6)
    np.testing.assert_allclose(t.get("yvonne"), mean_of(y[:3]), atol=1e-6)  # the other speaker is kept

    code, out, err = cli(capsys, "compare", x[4], "--speakers", table, "--model", ckpt)
    assert code == 0, err
    got = [line.split("\t") for line in out.strip().splitlines()]
    test = l2_normalise(vec[x[4]][None])[0]
    want = {k: float(l2_normalise(t.get(k)[None])[0] @ test) for k in t.keys}
    assert sorted(n for n, _ in got) == sorted(want)
    assert [float(c) for _, c in got] == sorted([float(c) for _, c in got], reverse=True)  # best first
    for name, c in got:
        assert float(c) == pytest.approx(want[name], abs=1e-5)

    before = table.read_bytes()
    res = dasv("compare", x[4], "--speakers", table, "--model", other)
    assert res.code == 1 and len(res.stderr.strip().splitlines()) == 1
    assert str(table) in res.stderr and "another model" in res.stderr
    code, _, err = cli(capsys, "enroll", "zed", y[4], "--model", other, "-o", table)
    assert code == 1 and "another model" in err and table.read_bytes() == before
    code, _, err = cli(capsys, "enroll", "two words", y[4], "--model", ckpt, "-o", table)
    assert code == 2 and "one word" in err
    from dasv_cli.io.embeddings import Embeddings, write_embeddings

    plain = tmp_path / "emb.h5"  # an utterance table, not speakers
    write_embeddings(plain, Embeddings(["a"], np.ones((1, 12), np.float32), {}))
    code, _, err = cli(capsys, "compare", x[4], "--speakers", plain, "--model", ckpt)
    assert code == 1 and f"{plain}: not an enrolled-speakers table" in err
    code, _, err = cli(capsys, "compare", x[0], x[1], "--speakers", table, "--model", ckpt)
    assert code == 2 and "one recording" in err
