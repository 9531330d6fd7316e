"""`dasv score --calibration`: LLRs in the scores TSV, actual DCF / Cllr / minCllr in the summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dasv_cli.eval.calibration import apply_calibration, calibrate_trials, load_calibration
from dasv_cli.eval.llr_metrics import calibrated_summary
from dasv_cli.io import embeddings as tables
from dasv_cli.io.scores import read_scores


def cli(capsys, *args: str):
    """`dasv ARGS` in this process (the command is thin; start-up is not what is tested)."""
    from dasv_cli.cli.app import run

    capsys.readouterr()
    code = run([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def halves(tmp_path: Path):
    """An embedding table of 8 clustered speakers and its trials split in two halves (fit / test)."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((8, 16))
    keys, vecs = [], []
    for s in range(8):
        for u in range(5):
            keys.append(f"spk{s}/u{u}")
            vecs.append(centres[s] + 0.8 * rng.standard_normal(16))
    tables.write_embeddings(tmp_path / "emb.h5", tables.Embeddings(keys, np.array(vecs, np.float32), {"checkpoint": "t"}))
    lines = [f"{int(a.split('/')[0] == b.split('/')[0])} {a} {b}\n"
             for i, a in enumerate(keys) for b in keys[i + 1:]]
    order = rng.permutation(len(lines))
    (tmp_path / "fit.txt").write_text("".join(lines[i] for i in order[::2]))
    (tmp_path / "test.txt").write_text("".join(lines[i] for i in order[1::2]))
    (tmp_path / "utt2dur").write_text("".join(f"{k} {1.0 + 0.7 * (i % 6):.2f}\n" for i, k in enumerate(keys)))
    return tmp_path


@pytest.mark.parametrize("quality", [False, True])
def test_score_with_calibration_writes_llrs_and_calibrated_metrics(halves, capsys, quality) -> None:
    d = halves
    code, _, err = cli(capsys, "score", "--trials", d / "fit.txt", "-e", d / "emb.h5", "-o", d / "fit.tsv")
    assert code == 0, err
    extra = ["--quality", "duration", "--durations", d / "utt2dur"] if quality else []
    code, _, err = cli(capsys, "calibrate", d / "fit.tsv", "-o", d / "cal.json", *extra)
    assert code == 0, err
    code, _, err = cli(capsys, "score", "--trials", d / "test.txt", "-e", d / "emb.h5", "-o", d / "cos.tsv")
    assert code == 0, err
    dur = ["--durations", d / "utt2dur"] if quality else []
    code, out, err = cli(capsys, "score", "--trials", d / "test.txt", "-e", d / "emb.h5", "--calibration",
                         d / "cal.json", *dur)
    assert code == 0, err
    assert "Cllr" in err and "actDCF@0.01" in err
    cos, llr_tsv = read_scores(d / "cos.tsv"), d / "llr.tsv"
    llr_tsv.write_text(out)
    llr = read_scores(llr_tsv)
    assert llr.key1 == cos.key1 and llr.key2 == cos.key2 and np.array_equal(llr.labels, cos.labels)
    cal = load_calibration(d / "cal.json")
    assert (cal.quality is not None) == quality
    expected = calibrate_trials(cal, cos.key1, cos.key2, cos.scores, durations=d / "utt2dur" if quality else None)
    if not quality:
        np.testing.assert_allclose(expected, apply_calibration(cal, cos.scores), rtol=0, atol=1e-12)
    np.testing.assert_allclose(llr.scores, expected, rtol=0, atol=2e-5)  # the TSV holds 6 decimals
    assert not np.allclose(llr.scores, cos.scores, atol=1e-3)  # they really are LLRs, not the cosines

    code, out, err = cli(capsys, "score", "--trials", d / "test.txt", "-e", d / "emb.h5", "--calibration",
                         d / "cal.json", *dur, "--json", "-o", d / "llr2.tsv")
    assert code == 0, err
    summary = json.loads(out)
    np.testing.assert_allclose(read_scores(d / "llr2.tsv").scores, llr.scores, rtol=0, atol=1e-9)
    want = calibrated_summary(read_scores(d / "llr2.tsv").scores, cos.labels).to_dict()
    for key in ("act_dcf_p01", "act_dcf_p05", "cllr", "min_cllr"):
        assert summary[key] == pytest.approx(want[key], abs=1e-4), key
    assert summary["calibration"] == str(d / "cal.json")
    assert 0.0 <= summary["min_cllr"] <= summary["cllr"]


def test_score_calibration_usage_errors(halves, capsys, dasv) -> None:
    d = halves
    assert cli(capsys, "score", "--trials", d / "fit.txt", "-e", d / "emb.h5", "-o", d / "fit.tsv")[0] == 0
    assert cli(capsys, "calibrate", d / "fit.tsv", "-o", d / "q.json", "--quality", "duration",
               "--durations", d / "utt2dur")[0] == 0
    res = dasv("score", "--trials", d / "test.txt", "-e", d / "emb.h5", "--calibration", d / "q.json")
    assert res.code == 2 and "--durations FILE" in res.stderr and str(d / "q.json") in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and res.stdout == ""
    code, _, err = cli(capsys, "score", "--trials", d / "test.txt", "-e", d / "emb.h5", "--durations", d / "utt2dur")
    assert code == 2 and "--calibration" in err
    code, _, err = cli(capsys, "score", "--trials", d / "test.txt", "-e", d / "emb.h5", "--calibration", d / "none.json")
    assert code != 0 and "none.json" in err


def test_a_calibration_is_refused_for_another_models_scores(halves, dasv) -> None:
    """The calibration is tied to the model whose scores it was fitted on (the scores file's header
    names it, as embedding tables and speakers files name theirs): another model's scores are
    refused with one line unless --any-model."""
    d = halves
    table = tables.read_embeddings(d / "emb.h5")
    for name, sha in (("a", "a" * 64), ("b", "b" * 64)):
        tables.write_embeddings(d / f"{name}.h5", table, {"checkpoint": f"/models/{name}.pt", "checkpoint_sha256": sha})
    fit = dasv("score", "--trials", d / "fit.txt", "-e", d / "a.h5", "-o", d / "fit.tsv")
    assert fit.code == 0, fit.stderr
    cal = dasv("calibrate", d / "fit.tsv", "-o", d / "cal.json")
    assert cal.code == 0, cal.stderr

    same = dasv("score", "--trials", d / "test.txt", "-e", d / "a.h5", "--calibration", d / "cal.json", "--json")
    assert same.code == 0, same.stderr
    other = dasv("score", "--trials", d / "test.txt", "-e", d / "b.h5", "--calibration", d / "cal.json", "--json")
    assert other.code == 1 and other.stdout == ""
    lines = other.stderr.strip().splitlines()
    assert len(lines) == 1 and str(d / "cal.json") in lines[0] and "/models/a.pt" in lines[0] \
        and "--any-model" in lines[0], other.stderr
    forced = dasv("score", "--trials", d / "test.txt", "-e", d / "b.h5", "--calibration", d / "cal.json",
                  "--any-model", "--json")
    assert forced.code == 0, forced.stderr
    assert (d / "fit.tsv").read_text().startswith(f"# dasv-scores checkpoint_sha256={'a' * 64} checkpoint=/models/a.pt\n")
    assert json.loads((d / "cal.json").read_text())["fitted_for"]["checkpoint_sha256"] == "a" * 64
    # `calibrate --model` names the model of scores that came without a header (a pipe, stdout)
    (d / "plain.tsv").write_text("".join(l for l in (d / "fit.tsv").read_text().splitlines(True) if l[0] != "#"))
    (d / "b.pt").write_bytes(b"a model file")
    assert dasv("calibrate", d / "plain.tsv", "-o", d / "cal-b.json", "--model", d / "b.pt").code == 0
    assert json.loads((d / "cal-b.json").read_text())["fitted_for"]["checkpoint_sha256"] == tables.file_sha256(d / "b.pt")
    assert dasv("score", "--trials", d / "test.txt", "-e", d / "a.h5", "--calibration", d / "cal-b.json").code == 1
