"""`dasv compare`: two recordings (or a pairs file) -> cosine, and with a calibration LLR and decision."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dasv_cli.eval.calibration import Calibration, apply_calibration, save_calibration
from dasv_cli.eval.compare import AudioEmbedder, Pair, compare_pairs
from dasv_cli.eval.llr_metrics import bayes_threshold
from conftest import run_inprocess  # tests/ is on sys.path
from test_export import demo_waves, need_extra, save_tiny_checkpoint, tiny_net


def cli(*args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `dasv ARGS` run in this process."""
    r = run_inprocess(*args)
    return r.code, r.stdout, r.stderr


@pytest.fixture(scope="module")
def ckpt(demo_files, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cmp") / "best.pt"
    save_tiny_checkpoint(path, tiny_net(demo_waves(demo_files, 3), "cmn", seed=2), "cmn")
    return path


def rows(out: str) -> list[list[str]]:
    return [line.split("\t") for line in out.strip().splitlines()]


def test_same_file_twice_and_demo_speakers(demo_files, ckpt) -> None:
    a, a2, b = demo_files[0], demo_files[1], demo_files[5]  # speaker 1 twice, then another speaker
    assert a.parent == a2.parent != b.parent
    code, out, err = cli("compare", a, a, "--model", ckpt)
    assert code == 0, err
    [[x, y, c]] = rows(out)
    assert (x, y) == (str(a), str(a)) and float(c) == pytest.approx(1.0, abs=1e-5)
    code, out, err = cli("compare", a, b, "--model", ckpt)
    assert code == 0, err
    [[x, y, c]] = rows(out)
    assert (x, y) == (str(a), str(b)) and -1.0 <= float(c) < 0.99999
    assert cli("compare", a, b, "--model", ckpt)[1] == out  # deterministic
    emb = AudioEmbedder(ckpt, "cpu")
    [same, diff] = compare_pairs(emb, [Pair(str(a), str(a2)), Pair(str(a), str(b))])
    assert f"{diff.cosine:.6f}" == c and same.llr is None and same.same is None
    table = emb.embed_paths([str(a)])
    assert table[str(a)].shape == (12,) and table[str(a)].dtype == np.float32


def test_pairs_file_embeds_each_file_once_and_names_bad_lines(demo_files, ckpt, tmp_path) -> None:
    f = [str(p) for p in demo_files[:3]]
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(f"# comment\n{f[0]} {f[1]}\n\n{f[0]}\t{f[2]}\n{f[1]} {f[2]}\n{f[2]} {f[0]}\n")
    emb = AudioEmbedder(ckpt, "cpu")
    from dasv_cli.eval.compare import read_pairs

    got = compare_pairs(emb, read_pairs(pairs))
    assert emb.embedded == 3 and len(got) == 4  # three distinct files, four pairs
    assert got[1].cosine == pytest.approx(got[3].cosine, abs=1e-6)  # symmetric
    code, out, err = cli("compare", "--pairs", pairs, "--model", ckpt)
    assert code == 0, err
    assert [r[:2] for r in rows(out)] == [[f[0], f[1]], [f[0], f[2]], [f[1], f[2]], [f[2], f[0]]]
    assert [float(r[2]) for r in rows(out)] == pytest.approx([g.cosine for g in got], abs=1e-6)
    assert "4 pair(s), 3 file(s) embedded" in err
    missing = tmp_path / "gone.flac"
    pairs.write_text(f"{f[0]} {f[1]}\n{f[0]} {missing}\n")
    res = run_inprocess("compare", "--pairs", pairs, "--model", ckpt)
    assert res.code == 1 and res.stdout == ""
    assert res.stderr.strip().count("\n") == 0 and str(missing) in res.stderr and f"{pairs}:2" in res.stderr
    pairs.write_text(f"{f[0]} {f[1]}\n{f[0]}\n")
    code, _, err = cli("compare", "--pairs", pairs, "--model", ckpt)
    assert code == 1 and f"{pairs}:2: expected 'pathA pathB'" in err
    res = run_inprocess("compare", "--pairs", "-", "--model", ckpt, input=f"{f[2]}\t{f[0]}\n")
    assert res.code == 0, res.stderr
    assert rows(res.stdout) == [[f[2], f[0], f"{got[3].cosine:.6f}"]]
    pairs.write_text("# nothing\n")
    code, _, err = cli("compare", "--pairs", pairs, "--model", ckpt)
    assert code == 1 and "no pairs" in err
    code, _, err = cli("compare", f[0], "--model", ckpt)
    assert code == 2 and "two audio files" in err
    code, _, err = cli("compare", f[0], missing, "--model", ckpt)
    assert code == 1 and f"{missing}: no such audio file" in err


def test_calibrated_decisions_at_the_prior(demo_files, ckpt, tmp_path) -> None:
    a, b = str(demo_files[0]), str(demo_files[7])
    cos = {r.pair.b: r.cosine for r in compare_pairs(AudioEmbedder(ckpt, "cpu"), [Pair(a, a), Pair(a, b)])}
    prior = 0.05
    mid = 0.5 * (cos[a] + cos[b])
    cal = Calibration(offset=bayes_threshold(prior) - 20.0 * mid, weights={"score": 20.0}, prior=0.5,
                      trials=2, targets=1, nontargets=1)
    path = tmp_path / "cal.json"
    save_calibration(cal, path)
    code, out, err = cli("compare", a, a, "--model", ckpt, "--calibration", path, "--prior", prior)
    assert code == 0, err
    [[_, _, c, llr, decision]] = rows(out)
    assert float(llr) == pytest.approx(apply_calibration(cal, [float(c)])[0], abs=1e-5)
    assert float(llr) > bayes_threshold(prior) and decision == "same"
    code, out, err = cli("compare", a, b, "--model", ckpt, "--calibration", path, "--prior", prior)
    assert code == 0, err
    [[_, _, c, llr, decision]] = rows(out)
    assert float(llr) < bayes_threshold(prior) and decision == "different"
    # the default prior (0.01) moves the threshold up: the same LLR of a pair can flip to 'different'
    cal.offset = bayes_threshold(0.05) - 20.0 * cos[a] + 0.5  # same-file LLR: between the two thresholds
    save_calibration(cal, path)
    assert bayes_threshold(0.05) < apply_calibration(cal, [cos[a]])[0] < bayes_threshold(0.01)
    code, out, _ = cli("compare", a, a, "--model", ckpt, "--calibration", path)
    assert rows(out)[0][4] == "different"
    code, out, _ = cli("compare", a, a, "--model", ckpt, "--calibration", path, "--prior", "0.05")
    assert rows(out)[0][4] == "same"
    code, _, err = cli("compare", a, b, "--model", ckpt, "--prior", "0.05")
    assert code == 2 and "--calibration" in err


def test_onnx_model_agrees_with_the_checkpoint(demo_files, ckpt, tmp_path) -> None:
    need_extra()
    from dasv_cli.deploy.export import export_onnx

    onnx = tmp_path / "model.onnx"
    export_onnx(ckpt, onnx)
    f = [str(p) for p in demo_files[::9][:3]]
    pairs = [Pair(f[0], f[1]), Pair(f[1], f[2]), Pair(f[0], f[0])]
    eager = compare_pairs(AudioEmbedder(ckpt, "cpu"), pairs)
    runtime = AudioEmbedder(onnx)
    assert runtime.onnx
    via_onnx = compare_pairs(runtime, pairs)
    assert [r.cosine for r in via_onnx] == pytest.approx([r.cosine for r in eager], abs=1e-4)
    code, out, err = cli("compare", f[0], f[1], "--model", onnx)
    assert code == 0, err
    assert float(rows(out)[0][2]) == pytest.approx(eager[0].cosine, abs=1e-4)


def test_embed_with_an_onnx_model_matches_the_checkpoint(demo_files, ckpt, tmp_path) -> None:
    need_extra()
    from dasv_cli.deploy.export import export_onnx
    from dasv_cli.io.embeddings import read_embeddings

    onnx = tmp_path / "model.onnx"
    export_onnx(ckpt, onnx)
    lst = tmp_path / "audio.lst"
    lst.write_text("".join(f"{p}\n" for p in demo_files[::8][:4]))
    code, _, err = cli("features", lst, "-o", tmp_path / "feats", "--jobs", "1")
    assert code == 0, err
    for source in (["--features", tmp_path / "feats"], ["--audio", lst]):
        code, _, err = cli("embed", "--model", ckpt, *source, "-o", tmp_path / "eager.h5", "-q")
        assert code == 0, err
        code, _, err = cli("embed", "--model", onnx, *source, "-o", tmp_path / "onnx.h5", "-q")
        assert code == 0, err
        eager, runtime = read_embeddings(tmp_path / "eager.h5"), read_embeddings(tmp_path / "onnx.h5")
        assert runtime.keys == eager.keys and len(runtime) == 4
        np.testing.assert_allclose(runtime.vectors, eager.vectors, atol=1e-4)
        assert runtime.attrs["checkpoint"] == str(onnx.resolve()) and runtime.attrs["norm"] == "cmn"
        (tmp_path / "eager.h5").unlink()
        (tmp_path / "onnx.h5").unlink()


def test_a_calibration_fitted_for_another_model_is_refused(demo_files, ckpt, tmp_path) -> None:
    from dasv_cli.io.embeddings import model_identity

    a = str(demo_files[0])
    cal = Calibration(offset=0.0, weights={"score": 10.0}, prior=0.5, trials=2, targets=1, nontargets=1,
                      fitted_for={"checkpoint": "/models/other.pt", "checkpoint_sha256": "0" * 64})
    save_calibration(cal, tmp_path / "other.json")
    code, out, err = cli("compare", a, a, "--model", ckpt, "--calibration", tmp_path / "other.json")
    assert code == 1 and out == "" and "/models/other.pt" in err and "--any-model" in err
    code, out, err = cli("compare", a, a, "--model", ckpt, "--calibration", tmp_path / "other.json", "--any-model")
    assert code == 0 and rows(out)[0][4] == "same", err
    cal.fitted_for = model_identity(ckpt)
    save_calibration(cal, tmp_path / "mine.json")
    code, out, err = cli("compare", a, a, "--model", ckpt, "--calibration", tmp_path / "mine.json")
    assert code == 0 and "unchecked" not in err, err
