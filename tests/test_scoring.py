"""Embedding tables, cosine scoring, adaptive s-norm, DET plots and `dasv score` as a user runs it."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from dasv_cli.errors import InputError
from dasv_cli.eval.metrics import compute_metrics
from dasv_cli.eval.scoring import cosine_scores, score_table
from dasv_cli.eval.snorm import adaptive_snorm
from dasv_cli.eval.trials import drop_missing
from dasv_cli.io import embeddings as tables
from dasv_cli.io.lists import Trials, read_trials
from dasv_cli.io.scores import read_scores


def make_table(n_spk=6, per=4, dim=12, seed=0, noise=0.6, prefix="spk"):
    """Speaker-clustered random embeddings: `spkS/uU` keys, vectors = speaker centre + noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_spk, dim))
    keys, vecs = [], []
    for s in range(n_spk):
        for u in range(per):
            keys.append(f"{prefix}{s}/u{u}")
            vecs.append(centres[s] + noise * rng.standard_normal(dim))
    return tables.Embeddings(keys, np.array(vecs, dtype=np.float32), {"checkpoint": "test"})


def all_pairs(keys):
    k1, k2, lab = [], [], []
    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            k1.append(keys[i])
            k2.append(keys[j])
            lab.append(int(keys[i].split("/")[0] == keys[j].split("/")[0]))
    return Trials(k1, k2, np.array(lab, dtype=np.int8))


# ----------------------------------------------------------------------------- tables


def test_hdf5_and_text_round_trip_and_append_only_missing(tmp_path):
    t = make_table()
    path = tmp_path / "e.h5"
    tables.write_embeddings(path, t, {"norm": "cmn"})
    back = tables.read_embeddings(path)
    assert back.keys == t.keys and np.array_equal(back.vectors, t.vectors)
    assert back.attrs["format"] == "dasv-embeddings" and back.attrs["norm"] == "cmn" and back.attrs["dim"] == 12
    assert back.missing(["spk0/u0", "new/a", "new/a", "new/b"]) == ["new/a", "new/b"]
    merged = back.merged(["spk0/u0", "new/a"], np.ones((2, 12), np.float32))
    assert len(merged) == len(t) + 1 and np.array_equal(merged.get("spk0/u0"), t.get("spk0/u0"))
    assert np.array_equal(merged.get("new/a"), np.ones(12, np.float32))
    # Text form reads back bit-exactly (9 significant digits for float32).
    txt = tmp_path / "e.txt"
    txt.write_text(tables.format_text_lines(t.keys, t.vectors))
    again = tables.read_embeddings(txt)
    assert again.keys == t.keys and np.array_equal(again.vectors, t.vectors)
    npy, keys = tables.export_npy(t, tmp_path / "out.npy")
    assert np.array_equal(np.load(npy), t.vectors) and keys.read_text().split() == t.keys


def test_bad_tables_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="no such embedding table"):
        tables.read_embeddings(tmp_path / "nope.h5")
    bad = tmp_path / "bad.txt"
    bad.write_text("a 1 2 3\nb 1 2\n")
    with pytest.raises(InputError, match=r"bad\.txt:2: expected a key and 3 numbers"):
        tables.read_embeddings(bad)
    bad.write_text("a 1 2\na 3 4\n")
    with pytest.raises(InputError, match=r"bad\.txt:2: duplicate key 'a'"):
        tables.read_embeddings(bad)
    bad.write_text("a 1 x\n")
    with pytest.raises(InputError, match=r"bad\.txt:1: not numbers"):
        tables.read_embeddings(bad)


# ----------------------------------------------------------------------------- scoring


def test_cosine_scores_match_a_per_trial_loop():
    t = make_table()
    trials = all_pairs(t.keys)
    scores = cosine_scores(t.keys, t.vectors, trials)
    for a, b, s in zip(trials.key1[:50], trials.key2[:50], scores[:50]):
        u, v = t.get(a).astype(np.float64), t.get(b).astype(np.float64)
        assert s == pytest.approx(u @ v / np.linalg.norm(u) / np.linalg.norm(v), abs=1e-6)
    # Clustered embeddings separate the speakers: the metrics say so.
    assert compute_metrics(scores, trials.labels).eer < 15


def test_zero_vector_scores_zero_not_nan():
    trials = Trials(["a"], ["b"], np.array([1], np.int8))
    s = cosine_scores(["a", "b"], np.array([[0, 0, 0], [1, 2, 3]], np.float32), trials)
    assert s[0] == 0.0


def test_unknown_keys_error_lists_them_or_are_skipped():
    t = make_table()
    trials = Trials(["spk0/u0", "ghost/1", "spk1/u1"], ["spk0/u1", "spk0/u0", "ghost/2"], np.array([1, 0, 0], np.int8))
    with pytest.raises(InputError, match=r"2 of 5 trial keys are not in the embedding table: ghost/1, ghost/2"):
        score_table(t, trials)
    kept, dropped = drop_missing(trials, t.index)
    assert dropped == 2 and kept.key1 == ["spk0/u0"]
    out = score_table(t, trials, skip_missing=True)
    assert out.skipped == 2 and len(out.scores) == 1


def brute_snorm(table, cohort, trials, top_n):
    def unit(v):
        return v / np.linalg.norm(v)

    def stats(key):
        e = unit(table.get(key).astype(np.float64))
        cs = sorted((float(e @ unit(cohort.vectors[j].astype(np.float64))) for j, ck in enumerate(cohort.keys)
                     if ck != key), reverse=True)[:top_n]
        return np.mean(cs), np.std(cs)

    out = []
    for a, b in zip(trials.key1, trials.key2):
        s = float(unit(table.get(a).astype(np.float64)) @ unit(table.get(b).astype(np.float64)))
        (ma, sa), (mb, sb) = stats(a), stats(b)
        out.append(0.5 * ((s - ma) / sa + (s - mb) / sb))
    return np.array(out)


def test_adaptive_snorm_matches_brute_force_and_leaves_self_out():
    t = make_table(n_spk=4, per=3, seed=1)
    cohort = make_table(n_spk=10, per=3, seed=2, prefix="coh")
    # Put one trial utterance into the cohort too: it must not be scored against itself.
    cohort = cohort.merged([t.keys[0]], t.vectors[:1])
    trials = all_pairs(t.keys)
    got = score_table(t, trials, cohort=cohort, top_n=5)
    assert got.snorm["top_n"] == 5 and got.snorm["cohort_size"] == 31
    assert np.allclose(got.scores, brute_snorm(t, cohort, trials, 5), atol=1e-5)
    # top_n larger than the cohort: all of it is used, and the summary says how many.
    small = make_table(n_spk=2, per=2, seed=3, prefix="coh")
    got = score_table(t, trials, cohort=small, top_n=300)
    assert got.snorm["top_n"] == 4 and np.allclose(got.scores, brute_snorm(t, small, trials, 4), atol=1e-5)


def test_snorm_refuses_mismatched_cohort():
    t = make_table(dim=12)
    with pytest.raises(InputError, match="cohort embeddings have 8 dimensions"):
        adaptive_snorm(np.zeros(1), t.vectors, np.array([0]), np.array([1]), make_table(dim=8), top_n=5)


def test_det_plot_is_written(tmp_path):
    from dasv_cli.eval.det import plot_det, thin
    from dasv_cli.eval.metrics import metrics_and_det

    t = make_table(n_spk=8, per=5)
    trials = all_pairs(t.keys)
    m, det = metrics_and_det(cosine_scores(t.keys, t.vectors, trials), trials.labels)
    out = plot_det(det, tmp_path / "det.png", m)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    # Thinning keeps the ends and stays monotone.
    x = np.linspace(3, -3, 100_000)
    keep = thin(x, -x, cells=100)
    assert keep[0] == 0 and keep[-1] == x.size - 1 and keep.size <= 250 and np.all(np.diff(keep) > 0)


# ----------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def scored_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("score")
    t = make_table(n_spk=8, per=5, seed=4)
    tables.write_embeddings(d / "embeddings.h5", t)
    trials = all_pairs(t.keys)
    with open(d / "trials.txt", "w") as fh:
        for a, b, y in zip(trials.key1, trials.key2, trials.labels):
            fh.write(f"{y} {a}.wav {b}.wav\n")
    with open(d / "clients.lst", "w") as c, open(d / "impostors.lst", "w") as i:
        for a, b, y in zip(trials.key1, trials.key2, trials.labels):
            (c if y else i).write(f"{a} {b}\n")
    cohort = make_table(n_spk=20, per=3, seed=5, prefix="coh")
    tables.write_embeddings(d / "cohort.h5", cohort)
    expected = compute_metrics(cosine_scores(t.keys, t.vectors, trials), trials.labels)
    return d, trials, expected


def pair_scores(d, trials) -> dict[tuple[str, str], float]:
    """(key1, key2) -> cosine score, from the fixture's table: what each TSV row must say, in that order."""
    t = tables.read_embeddings(d / "embeddings.h5")
    return dict(zip(zip(trials.key1, trials.key2), cosine_scores(t.keys, t.vectors, trials).tolist()))


def test_score_pair_files_tsv_on_stdout_summary_on_stderr(dasv, scored_dir):
    d, trials, expected = scored_dir
    r = dasv("score", "clients.lst", "impostors.lst", cwd=d)  # default table: embeddings.h5
    assert r.code == 0, r.stderr
    rows = [line.split("\t") for line in r.stdout.splitlines()]
    assert len(rows) == len(trials) and all(len(row) == 4 for row in rows)
    # key1 and key2 as the trial files have them (clients first, each file in its order, labelled 1 then 0):
    # cosine is symmetric, so only the keys tell a swapped pair, and a user joins on them.
    want = [(a, b, y) for y in (1, 0) for a, b, t in zip(trials.key1, trials.key2, trials.labels) if t == y]
    assert [(row[0], row[1], int(row[3])) for row in rows] == want
    by_pair = pair_scores(d, trials)
    assert all(float(row[2]) == pytest.approx(by_pair[row[0], row[1]], abs=5e-7) for row in rows)
    scores = np.array([float(row[2]) for row in rows])
    labels = np.array([int(row[3]) for row in rows])
    assert compute_metrics(scores, labels).eer == pytest.approx(expected.eer, abs=1e-3)
    assert f"EER {expected.eer:.3f}%" in r.stderr and "minDCF@0.01" in r.stderr
    assert f"trials {len(trials)}" in r.stderr


def test_score_trials_from_stdin_json(dasv, scored_dir):
    d, trials, expected = scored_dir
    text = (d / "trials.txt").read_text()
    r = dasv("score", "--trials", "-", "--json", input=text, cwd=d)
    assert r.code == 0, r.stderr
    summary = json.loads(r.stdout)
    for key in ("trials", "targets", "nontargets", "eer", "min_dcf_p01", "min_dcf_p05", "eer_threshold",
                "skipped", "snorm"):
        assert key in summary
    assert summary["trials"] == len(trials) and summary["targets"] == int(trials.labels.sum())
    assert summary["eer"] == pytest.approx(expected.eer) and summary["min_dcf_p01"] == pytest.approx(expected.min_dcf_p01)
    assert summary["skipped"] == 0 and summary["snorm"] is None


def test_score_pipeline_through_a_shell(scored_dir):
    """`cat trials | dasv score --trials - | sort ...` exactly as a user types it."""
    import os
    import subprocess
    import sys

    d, trials, _ = scored_dir
    cmd = f"cat trials.txt | {sys.executable} -m dasv_cli score --trials - -e embeddings.h5 | sort -k3,3 -g | tail -n 1"
    p = subprocess.run(cmd, shell=True, cwd=d, capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert p.returncode == 0, p.stderr
    key1, key2, score, label = p.stdout.strip().split("\t")
    # The last line after a numeric sort is the best-scoring trial, keys in the trial list's order.
    by_pair = pair_scores(d, trials)
    assert (key1, key2) in by_pair, f"{key1} {key2} is not a trial (keys swapped?)"
    top = max(by_pair.values())
    assert float(score) == pytest.approx(top, abs=5e-7) and by_pair[key1, key2] == pytest.approx(top, abs=1e-6)
    assert label == str(int(key1.split("/")[0] == key2.split("/")[0]))


def test_score_missing_keys_cohort_det_and_output_file(dasv, scored_dir, tmp_path):
    d, trials, _ = scored_dir
    extra = "1 spk0/u0 ghost/x\n0 ghost/y spk1/u1\n"
    text = (d / "trials.txt").read_text() + extra
    r = dasv("score", "--trials", "-", "-e", str(d / "embeddings.h5"), input=text)
    assert r.code == 1
    first = len((d / "trials.txt").read_text().splitlines()) + 1  # the line of the first trial naming ghost/x
    assert f"dasv: error: <stdin>:{first}: 2 of 42 trial keys are not in" in r.stderr and "ghost/x, ghost/y" in r.stderr
    assert "--skip-missing" in r.stderr and r.stdout == ""
    out = tmp_path / "scores.tsv"
    png = tmp_path / "det.png"
    r = dasv("score", "--trials", "-", "-e", str(d / "embeddings.h5"), "--skip-missing", "--json",
             "--cohort", str(d / "cohort.h5"), "--top-n", "10", "-o", str(out), "--det-plot", str(png), input=text)
    assert r.code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["skipped"] == 2 and summary["trials"] == len(trials)
    assert summary["snorm"]["top_n"] == 10 and summary["snorm"]["cohort_size"] == 60
    assert "adaptive s-norm applied" in r.stderr and "skipped 2 trial(s)" in r.stderr
    written = read_scores(out)  # the file (written atomically) has the trials' keys in their order
    assert (written.key1, written.key2) == (trials.key1, trials.key2)
    assert written.labels.tolist() == trials.labels.astype(bool).tolist()
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "args, message, code",
    [
        (["clients.lst"], "got one trial file", 2),
        (["clients.lst", "impostors.lst", "--trials", "trials.txt"], "not both", 2),
        ([], "no trials", 2),
        (["--trials", "trials.txt", "--model", "x.pt"], "--model and --features go together", 2),
        (["--trials", "trials.txt", "-e", "missing.h5"], "missing.h5: no such embedding table", 1),
        (["--trials", "nothere.txt"], "nothere.txt: no such file", 1),
    ],
)
def test_score_usage_and_input_errors(dasv, scored_dir, args, message, code):
    d, _, _ = scored_dir
    r = dasv("score", *args, cwd=d)
    assert r.code == code and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_score_help_shows_an_example(dasv):
    r = dasv("score", "--help")
    assert r.code == 0 and "dasv score --trials" in r.stdout and "--skip-missing" in r.stdout


def test_voxceleb1_list_with_random_embeddings(shared_data, tmp_path, dasv):
    """The real VoxCeleb1-O list (37,720 trials, 4,715 unique keys) scored from random embeddings."""
    path = shared_data / "voxceleb1-veri_test.txt"
    trials = read_trials(path)
    keys = trials.unique_keys()
    assert len(trials) == 37_720 and len(keys) == 4_715
    rng = np.random.default_rng(0)
    t = tables.Embeddings(keys, rng.standard_normal((len(keys), 32)).astype(np.float32))
    tables.write_embeddings(tmp_path / "vox.h5", t)
    started = time.perf_counter()
    r = dasv("score", "--trials", str(path), "-e", str(tmp_path / "vox.h5"), "--json")
    assert r.code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["trials"] == 37_720 and summary["targets"] == 18_860 and summary["nontargets"] == 18_860
    # Random embeddings carry no speaker information: EER near 50 %, minDCF near 1.
    assert 45 < summary["eer"] < 55 and summary["min_dcf_p01"] > 0.95
    expected = compute_metrics(cosine_scores(keys, t.vectors, trials), trials.labels)
    assert summary["eer"] == pytest.approx(expected.eer) and summary["eer_threshold"] == pytest.approx(expected.eer_threshold)
    print(f"voxceleb1-veri_test.txt scored through the CLI in {time.perf_counter() - started:.2f} s")


def test_keys_with_spaces_round_trip_through_every_text_form(dasv, tmp_path):
    """`dasv embed -o emb.txt` of a key with spaces, then `dasv score --embeddings emb.txt` (and from a
    pipe), trials that name it (TAB-separated; classic lines still split on whitespace), the scores
    TSV read back by `dasv calibrate`, and labels and drawn trials that carry it."""
    import os
    import subprocess
    import sys

    from dasv_cli.io.lists import read_train_labels

    t = make_table(n_spk=4, per=3, prefix="my speaker ")  # keys `my speaker 0/u0`, ...
    tables.write_text_file(tmp_path / "emb.txt", t.keys, t.vectors)  # what `dasv embed -o emb.txt` writes
    back = tables.read_embeddings(tmp_path / "emb.txt")
    assert back.keys == t.keys and np.array_equal(back.vectors, t.vectors)
    trials = all_pairs(t.keys)
    lines = [f"{y}\t{a}\t{b}\n" for a, b, y in zip(trials.key1, trials.key2, trials.labels)]
    (tmp_path / "trials.txt").write_text("".join(lines))
    with open(tmp_path / "clients.lst", "w") as c, open(tmp_path / "impostors.lst", "w") as i:
        for a, b, y in zip(trials.key1, trials.key2, trials.labels):
            (c if y else i).write(f"{a}\t{b}\n")

    r = dasv("score", "--trials", "trials.txt", "--embeddings", "emb.txt", "-o", "scores.tsv", "--json", cwd=tmp_path)
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["trials"] == len(trials)
    rows = [line.split("\t") for line in (tmp_path / "scores.tsv").read_text().splitlines() if not line.startswith("#")]
    assert [(a, b) for a, b, *_ in rows] == list(zip(trials.key1, trials.key2))
    assert dasv("calibrate", "scores.tsv", "-o", "cal.json", cwd=tmp_path).code == 0
    pair = dasv("score", "clients.lst", "impostors.lst", "--embeddings", "emb.txt", "--json", cwd=tmp_path)
    assert pair.code == 0 and json.loads(pair.stdout)["trials"] == len(trials), pair.stderr
    cmd = (f"cat emb.txt | {sys.executable} -m dasv_cli score --trials trials.txt --embeddings - --json")
    p = subprocess.run(cmd, shell=True, cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert p.returncode == 0 and json.loads(p.stdout)["trials"] == len(trials), p.stderr

    # Classic whitespace lines still read; a TAB line keeps its spaces.
    (tmp_path / "mixed.txt").write_text(f"1 spk0/u0 spk0/u1\n0\t{t.keys[0]}\t{t.keys[3]}\n")
    mixed = read_trials(tmp_path / "mixed.txt")
    assert mixed.key1 == ["spk0/u0", t.keys[0]] and mixed.key2 == ["spk0/u1", t.keys[3]]
    (tmp_path / "labels.txt").write_text("".join(f"{k}\tspk{k[11]}\n" for k in t.keys))
    assert read_train_labels(tmp_path / "labels.txt").keys == t.keys
    drawn = dasv("prepare", "trials", "labels.txt", "-n", "6", "--seed", "1", "-o", "prepared", cwd=tmp_path)
    assert drawn.code == 0, drawn.stderr
    assert set(read_trials(tmp_path / "prepared" / "trials.txt").key1) <= set(t.keys)
