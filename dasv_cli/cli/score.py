"""`dasv score`: cosine scores for a trial list from an embedding table (or a model and features)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer

EPILOG = """\
[bold]Examples[/bold]

  dasv score clients.lst impostors.lst --embeddings embeddings.h5 > scores.tsv

  dasv score --trials voxceleb1-veri_test.txt -e vox1.h5 --json

  cat trials.txt | dasv score --trials - --skip-missing -o scores.tsv --det-plot det.png

  dasv score --trials trials.txt --model best.pt --features feats/ --cohort train.h5 --top-n 300
"""


def register(app: typer.Typer) -> None:
    app.command("score", epilog=EPILOG)(score)


def score(
    trial_files: Optional[List[Path]] = typer.Argument(
        None, metavar="CLIENTS IMPOSTORS",
        help="The original pair of trial files: same-speaker pairs, then different-speaker pairs ('key1 key2' lines).",
        show_default=False,
    ),
    trials: Optional[str] = typer.Option(
        None, "--trials", "-t", metavar="FILE|-",
        help="One trial list, VoxCeleb ('1|0 key1 key2') or Kaldi ('key1 key2 target|nontarget'); '-' reads stdin.",
    ),
    embeddings: Optional[Path] = typer.Option(
        None, "--embeddings", "-e", metavar="FILE",
        help="Embedding table (HDF5 from `dasv embed`, or its text form; '-' reads the text form from stdin); default: embeddings.h5.",
        show_default=False,
    ),
    model: Optional[Path] = typer.Option(None, "--model", "-m", metavar="CKPT",
                                         help="Embed with this checkpoint instead of reading a table (needs --features)."),
    features: Optional[Path] = typer.Option(None, "--features", "-f", metavar="DIR",
                                            help="Feature store to embed from (with --model)."),
    device: str = typer.Option("auto", "--device", help="With --model: cpu, cuda, cuda:N or auto (cuda when present)."),
    output: Optional[str] = typer.Option(None, "--output", "-o", metavar="FILE|-",
                                         help="Write the scores TSV here instead of stdout."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout (scores only go to -o)."),
    skip_missing: bool = typer.Option(False, "--skip-missing",
                                      help="Skip trials whose keys have no embedding (counted in the summary)."),
    cohort: Optional[Path] = typer.Option(None, "--cohort", metavar="FILE",
                                          help="Cohort embedding table: apply adaptive s-norm."),
    top_n: int = typer.Option(300, "--top-n", min=2, help="Top cohort scores per utterance for adaptive s-norm."),
    det_plot: Optional[Path] = typer.Option(None, "--det-plot", metavar="FILE.png",
                                            help="Draw the DET curve with the EER point marked."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress; the summary is still printed."),
) -> None:
    """Score trials with cosine similarity; scores as TSV on stdout, the summary (EER, minDCF) on stderr.

    Each trial's score is the cosine of the two stored embeddings. TSV columns: key1, key2, score,
    label (1 same speaker, 0 different). Accepts the original tool's CLIENTS IMPOSTORS pair or --trials.
    """
    from dasv_cli import progress
    from dasv_cli.errors import UsageError
    from dasv_cli.eval.metrics import compute_metrics, metrics_and_det

    progress.set_quiet(quiet)
    if trials == "-" and embeddings is not None and str(embeddings) == "-":
        raise UsageError("--trials - and --embeddings - cannot both read stdin")
    trial_list, trials_name = read_trial_arguments(trial_files, trials)
    if model is not None or features is not None:
        if model is None or features is None:
            raise UsageError("--model and --features go together (embed from a feature store)")
        if embeddings is not None:
            raise UsageError("give either --embeddings or --model/--features, not both")
    from dasv_cli.io.atomic import check_writable

    if output is not None and output != "-":
        check_writable(output, "scores")
    if det_plot is not None:
        check_writable(det_plot, "DET plot")
    started = time.perf_counter()
    if model is not None:
        from dasv_cli.eval.embed import embed_trials_table

        table, table_name = embed_trials_table(model, features, trial_list, device=device,
                                               skip_missing=skip_missing), str(features)
    else:
        from dasv_cli.io.embeddings import read_embeddings

        path = embeddings if embeddings is not None else Path("embeddings.h5")
        table, table_name = read_embeddings(path), str(path)
    cohort_table = None
    if cohort is not None:
        from dasv_cli.io.embeddings import read_embeddings

        cohort_table = read_embeddings(cohort)

    from dasv_cli.eval.scoring import score_table

    result = score_table(table, trial_list, skip_missing=skip_missing, table_name=table_name,
                         cohort=cohort_table, cohort_name=str(cohort) if cohort else None, top_n=top_n)
    if det_plot is not None:
        from dasv_cli.eval.det import plot_det

        metrics, det = metrics_and_det(result.scores, result.trials.labels)
        plot_det(det, det_plot, metrics, title=f"DET: {trials_name}" + (" (s-norm)" if result.snorm else ""))
    else:
        metrics = compute_metrics(result.scores, result.trials.labels)
    elapsed = time.perf_counter() - started

    if output is not None and output != "-":
        write_scores_file(Path(output), result.trials, result.scores)
    elif not json_out:
        write_scores(None, result.trials, result.scores)

    summary = metrics.to_dict()
    summary["skipped"] = result.skipped
    summary["snorm"] = result.snorm
    if json_out:
        import json

        progress.stdout_write(json.dumps(summary, indent=2) + "\n")
    print_summary(metrics, skipped=result.skipped, snorm=result.snorm, elapsed=elapsed,
                  det_plot=det_plot, output=output)


def read_trial_arguments(trial_files: Optional[List[Path]], trials: Optional[str]):
    """(Trials, display name) from CLIENTS IMPOSTORS or --trials; contradictions are usage errors."""
    from dasv_cli.errors import UsageError
    from dasv_cli.io.lists import read_trial_pair, read_trials

    files = list(trial_files or [])
    if trials is not None and files:
        raise UsageError("give either CLIENTS IMPOSTORS or --trials, not both")
    if trials is not None:
        return read_trials(trials), ("<stdin>" if trials == "-" else trials)
    if len(files) == 2:
        return read_trial_pair(files[0], files[1]), f"{files[0]} + {files[1]}"
    if len(files) == 1:
        raise UsageError(f"got one trial file ({files[0]}); give CLIENTS and IMPOSTORS, or use --trials FILE")
    if files:
        raise UsageError(f"expected two trial files (CLIENTS IMPOSTORS), got {len(files)}")
    raise UsageError("no trials: give CLIENTS IMPOSTORS or --trials FILE (or '-' for stdin)")


def _tsv_chunks(trials, scores, chunk: int = 100_000):
    labels = trials.labels
    for start in range(0, len(trials), chunk):
        stop = min(start + chunk, len(trials))
        yield "".join(
            f"{a}\t{b}\t{s:.6f}\t{int(y)}\n"
            for a, b, s, y in zip(trials.key1[start:stop], trials.key2[start:stop],
                                  scores[start:stop].tolist(), labels[start:stop].tolist())
        )


def write_scores(stream, trials, scores) -> None:
    """TSV `key1 key2 score label` to a stream (stdout when None)."""
    import sys

    out = stream or sys.stdout
    for text in _tsv_chunks(trials, scores):
        out.write(text)
    out.flush()


def write_scores_file(path: Path, trials, scores) -> None:
    """The scores TSV written to a temporary file beside `path`, then renamed (never half a file)."""
    from dasv_cli.io.atomic import write_text_atomic

    write_text_atomic(path, "scores", lambda fh: write_scores(fh, trials, scores))


def print_summary(metrics, *, skipped: int = 0, snorm=None, elapsed: float | None = None,
                  det_plot: Optional[Path] = None, output: Optional[str] = None) -> None:
    """The people-facing summary on stderr (shown under --quiet too: it is the result)."""
    from dasv_cli import progress

    progress.log(metrics.summary(), force=True)
    extra = []
    if skipped:
        extra.append(f"skipped {skipped} trial(s) with keys missing from the embeddings")
    if snorm:
        extra.append(f"adaptive s-norm applied (top {snorm['top_n']} of {snorm['cohort_size']} cohort scores)")
    if output and output != "-":
        extra.append(f"scores written to {output}")
    if det_plot is not None:
        extra.append(f"DET plot written to {det_plot}")
    if elapsed is not None:
        extra.append(f"{elapsed:.2f} s")
    if extra:
        progress.log("; ".join(extra), force=True)
