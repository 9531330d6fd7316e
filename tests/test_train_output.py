"""What a training run tells people: the progress line's EER is the latest validation's, and a run
logged to a file (no terminal) prints its times whole."""

from __future__ import annotations

import re

from conftest import TINY_FLAGS, read_metrics, run_inprocess


def test_window_info_shows_the_latest_eer_after_a_report() -> None:
    from dasv_cli.train.runlog import Window

    w = Window()
    w.add(2.0, 3.0, 4)
    assert w.info(1, None).startswith("loss 2.000  acc 75.0%")
    w.reset()  # a report at this step, then a validation: the window is empty
    assert w.info(1, 12.5).endswith("EER 12.50%") and w.info(1, 12.5).startswith("loss 2.000")
    assert w.info(1, 30.0).endswith("EER 30.00%")


def test_progress_line_without_a_terminal_has_the_last_eer_and_whole_times(data, tmp_path) -> None:
    out = tmp_path / "run"
    r = run_inprocess("train", "--train-labels", data / "labels.txt", "--features", data / "feats", "--valid-trials",
                      data / "trials.txt", *TINY_FLAGS, "--max-steps", "4", "--validate-every", "2", "-o", out)
    assert r.code == 0, r.stderr
    eers = [row["eer"] for row in read_metrics(out) if "eer" in row]
    assert len(eers) == 2
    [bar] = [line for line in r.stderr.splitlines() if line.startswith("train ") and "4/4" in line]
    assert bar.split("EER ")[1].split("%")[0] == f"{eers[-1]:.2f}", bar
    assert "…" not in bar and len(re.findall(r"\d+:\d\d:\d\d", bar)) == 2, bar


def test_a_damaged_last_pt_on_resume_points_to_best_pt(data, tmp_path) -> None:
    out = tmp_path / "run"
    args = ["train", "--train-labels", data / "labels.txt", "--features", data / "feats", "--valid-trials",
            data / "trials.txt", *TINY_FLAGS, "--validate-every", "2", "-o", out]
    assert run_inprocess(*args, "--max-steps", "2").code == 0
    last = out / "last.pt"
    raw = bytearray(last.read_bytes())
    last.write_bytes(bytes(raw[: len(raw) // 2]))  # cut short, as by a full disk
    r = run_inprocess(*args, "--max-steps", "4", "--resume")
    assert r.code == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"dasv: error: {last}: " in r.stderr and "checkpoint" in r.stderr
    assert f"--init-from {out / 'best.pt'}" in r.stderr and "copy it over last.pt" in r.stderr
    (out / "last.pt").replace(out / "last.pt.damaged")
    (out / "last.pt").write_bytes((out / "best.pt").read_bytes())  # the advice works: resume from best.pt
    r = run_inprocess(*args, "--max-steps", "4", "--resume")
    assert r.code == 0, r.stderr
    assert [row["step"] for row in read_metrics(out) if "eer" in row][-1] == 4
