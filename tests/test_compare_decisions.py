"""What a calibrated decision prints: the threshold and the prior it comes from, the fitted map as
people write it, units in the JSON summaries, and `compare TEST --speakers --calibration`."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from conftest import run_inprocess
from dasv_cli.eval.calibration import Calibration, apply_calibration, save_calibration
from dasv_cli.eval.quality import Quality
from test_compare import ckpt, rows  # noqa: F401 - the module's checkpoint fixture


def test_compare_says_which_threshold_decides(demo_files, ckpt, tmp_path) -> None:  # noqa: F811
    path = tmp_path / "cal.json"
    save_calibration(Calibration(offset=-2.0, weights={"score": 10.0}, prior=0.5, trials=2, targets=1,
                                 nontargets=1), path)
    a, b = str(demo_files[0]), str(demo_files[7])
    r = run_inprocess("compare", a, b, "--model", ckpt, "--calibration", path)
    assert r.code == 0, r.stderr
    assert "LLR >= 4.595" in r.stderr and "target prior 0.01" in r.stderr
    r = run_inprocess("compare", a, b, "--model", ckpt, "--calibration", path, "--prior", "0.05")
    assert r.code == 0 and "LLR >= 2.944" in r.stderr and "target prior 0.05" in r.stderr
    assert "LLR >=" not in run_inprocess("compare", a, b, "--model", ckpt).stderr


def test_compare_speakers_with_a_calibration(demo_files, ckpt, tmp_path) -> None:  # noqa: F811
    table = tmp_path / "speakers.h5"
    x, y = [str(p) for p in demo_files[0:3]], [str(p) for p in demo_files[5:8]]
    for name, files in (("xavier", x[:2]), ("yvonne", y[:2])):
        assert run_inprocess("enroll", name, *files, "--model", ckpt, "-o", table).code == 0
    plain = run_inprocess("compare", x[2], "--speakers", table, "--model", ckpt)
    assert plain.code == 0, plain.stderr
    cal = Calibration(offset=-1.0, weights={"score": 8.0}, prior=0.5, trials=2, targets=1, nontargets=1)
    save_calibration(cal, tmp_path / "cal.json")
    r = run_inprocess("compare", x[2], "--speakers", table, "--model", ckpt, "--calibration", tmp_path / "cal.json",
                      "--prior", "0.3")
    assert r.code == 0, r.stderr
    got = rows(r.stdout)
    assert [row[:2] for row in got] == rows(plain.stdout)
    for name, cosine, llr, decision in got:
        assert float(llr) == pytest.approx(apply_calibration(cal, [float(cosine)])[0], abs=1e-5)
        assert decision == ("same" if float(llr) >= -np.log(0.3 / 0.7) else "different")
    assert "target prior 0.3" in r.stderr
    cal.quality, cal.weights = Quality(measure="duration"), {"score": 8.0, "log_min_duration": 0.1,
                                                                 "log_max_duration": 0.1}
    save_calibration(cal, tmp_path / "dur.json")
    r = run_inprocess("compare", x[2], "--speakers", table, "--model", ckpt, "--calibration", tmp_path / "dur.json")
    assert r.code == 2 and "--quality duration" in r.stderr and r.stdout == ""


def test_calibrate_prints_the_map_with_its_signs_and_units_are_named(tmp_path) -> None:
    rng = np.random.default_rng(0)
    tar, non = rng.normal(0.9, 0.03, 200), rng.normal(0.6, 0.05, 200)  # a large slope, a negative offset
    lines = [f"a{i}\tb{i}\t{s:.5f}\t{int(i < 200)}\n" for i, s in enumerate(np.concatenate([tar, non]))]
    (tmp_path / "scores.tsv").write_text("".join(lines))
    r = run_inprocess("calibrate", tmp_path / "scores.tsv", "-o", tmp_path / "cal.json", "--json")
    assert r.code == 0, r.stderr
    cal = json.loads(r.stdout)
    w, b = cal["weights"]["score"], cal["offset"]
    assert w > 0 > b
    m = re.search(r"llr = ([0-9.e+]+) \* score - ([0-9.e+]+);", r.stderr)
    assert m, r.stderr
    assert float(m.group(1)) == pytest.approx(w, rel=1e-3) and float(m.group(2)) == pytest.approx(-b, rel=1e-3)
    training = cal["training"]
    assert training["eer_percent"] == training["eer"] and 0 <= training["eer_percent"] <= 100
    from dasv_cli.eval.metrics import compute_metrics

    summary = compute_metrics([0.9, 0.8, 0.3, 0.85], [1, 1, 0, 0]).to_dict()
    assert summary["eer_percent"] == pytest.approx(50.0) and summary["eer"] == summary["eer_percent"]
