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
