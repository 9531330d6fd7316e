"""`dasv score`: cosine scores for a trial list from an embedding table (or a model and features)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from dasv_cli.cli.options import device_option, read_trial_arguments, trial_files_argument, trials_option

EPILOG = """\
[bold]Examples[/bold]

  dasv score clients.lst impostors.lst --embeddings embeddings.h5 > scores.tsv

  dasv score --trials voxceleb1-veri_test.txt -e vox1.h5 --json

  cat trials.txt | dasv score --trials - --skip-missing -o scores.tsv --det-plot det.png

  dasv score --trials trials.txt --model best.pt --features feats/ --cohort train.h5 --top-n 300

  dasv score --trials eval.txt -e vox1.h5 --calibration cal.json --durations utt2dur > llrs.tsv
"""


def register(app: typer.Typer) -> None:
    app.command("score", epilog=EPILOG)(score)


def score(
    trial_files: Optional[List[Path]] = trial_files_argument(" ('key1 key2' lines)"),
    trials: Optional[str] = trials_option(", VoxCeleb ('1|0 key1 key2') or Kaldi ('key1 key2 target|nontarget')"),
    embeddings: Optional[Path] = typer.Option(
        None, "--embeddings", "-e", metavar="FILE",
        help="Embedding table (HDF5 from `dasv embed`, or its text form; '-' reads the text form from stdin); default: embeddings.h5.",
        show_default=False,
    ),
    model: Optional[Path] = typer.Option(None, "--model", "-m", metavar="CKPT",
                                         help="Embed with this checkpoint instead of reading a table (needs --features)."),
    features: Optional[Path] = typer.Option(None, "--features", "-f", metavar="DIR",
                                            help="Feature store to embed from (with --model)."),
    device: str = device_option("With --model: "),
    output: Optional[str] = typer.Option(None, "--output", "-o", metavar="FILE|-",
                                         help="Write the scores TSV here instead of stdout."),
    json_out: bool = typer.Option(False, "--json",
                                  help="Print the summary as JSON on stdout (scores only go to -o); eer_percent "
                                       "(and eer) in percent, DCFs as fractions."),
    skip_missing: bool = typer.Option(False, "--skip-missing",
                                      help="Skip trials whose keys have no embedding (counted in the summary)."),
    cohort: Optional[Path] = typer.Option(None, "--cohort", metavar="FILE",
                                          help="Cohort embedding table: apply adaptive s-norm."),
    top_n: int = typer.Option(300, "--top-n", min=2, help="Top cohort scores per utterance for adaptive s-norm."),
    det_plot: Optional[Path] = typer.Option(None, "--det-plot", metavar="FILE.png",
                                            help="Draw the DET curve with the EER point marked."),
    calibration: Optional[Path] = typer.Option(
        None, "--calibration", metavar="CAL.json",
        help="Write natural-log LLRs (from `dasv calibrate`) instead of cosines; the summary adds actual DCF, Cllr, minCllr."),
    durations: Optional[Path] = typer.Option(None, "--durations", metavar="FILE",
                                             help="With a --quality duration calibration: 'key seconds' lines (utt2dur)."),
    any_model: bool = typer.Option(False, "--any-model",
                                   help="Apply --calibration even to scores of another model than it was fitted for."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress; the summary is still printed."),
) -> None:
    """Score trials with cosine similarity; scores as TSV on stdout, the summary (EER, minDCF) on stderr.

    Each trial's score is the cosine of the two stored embeddings. TSV columns: key1, key2, score,
    label (1 same speaker, 0 different). Accepts the original tool's CLIENTS IMPOSTORS pair or --trials.
    """
    from dasv_cli import progress
    from dasv_cli.errors import UsageError
    from dasv_cli.eval.score_run import print_summary, run_score
    from dasv_cli.io.scores import write_scores

    progress.set_quiet(quiet)
    if trials == "-" and embeddings is not None and str(embeddings) == "-":
        raise UsageError("--trials - and --embeddings - cannot both read stdin")
    trial_list, trials_name = read_trial_arguments(trial_files, trials)
    if model is not None or features is not None:
        if model is None or features is None:
            raise UsageError("--model and --features go together (embed from a feature store)")
        if embeddings is not None:
            raise UsageError("give either --embeddings or --model/--features, not both")
    result = run_score(trial_list, trials_name, embeddings=embeddings, model=model, features=features,
                       device=device, skip_missing=skip_missing, cohort=cohort, top_n=top_n, det_plot=det_plot,
                       output=output, calibration=calibration, durations=durations, any_model=any_model)
    if (output is None or output == "-") and not json_out:
        write_scores(None, result.scored.trials, result.scored.scores)
    if json_out:
        import json

        progress.stdout_write(json.dumps(result.summary(), indent=2) + "\n")
    print_summary(result, det_plot=det_plot, output=output)
