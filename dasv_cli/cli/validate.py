"""`dasv validate`: EER and minDCF of one checkpoint, or of every checkpoint in a directory (ranked)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from dasv_cli.cli.options import device_option, read_trial_arguments, trial_files_argument, trials_option

EPILOG = """\
[bold]Examples[/bold]

  dasv validate --model best.pt --features feats/ clients.lst impostors.lst

  dasv validate --model runs/exp1/ --features feats/ --trials voxceleb1-veri_test.txt --json

stdout: one TSV row per checkpoint (rank, checkpoint, eer, min_dcf_p01, min_dcf_p05, eer_threshold,
trials), best EER first; --json prints the same as a JSON list.
"""


def register(app: typer.Typer) -> None:
    app.command("validate", epilog=EPILOG)(validate)


def validate(
    trial_files: Optional[List[Path]] = trial_files_argument(),
    model: Path = typer.Option(..., "--model", "-m", metavar="CKPT|DIR",
                               help="A checkpoint (.pt / original .chkpt), or a directory of them to rank."),
    features: Path = typer.Option(..., "--features", "-f", metavar="DIR", help="Feature store holding the trial utterances."),
    trials: Optional[str] = trials_option(" (VoxCeleb or Kaldi form)"),
    device: str = device_option(),
    skip_missing: bool = typer.Option(False, "--skip-missing", help="Skip trials whose utterances are not in the store."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress; summaries are still printed."),
) -> None:
    """Validate checkpoints on a trial list: each unique utterance is embedded once per checkpoint.

    Prints EER, minDCF@0.01/0.05 and the EER threshold; a directory of checkpoints is ranked by EER.
    """
    from dasv_cli import progress
    from dasv_cli.errors import EXIT_PARTIAL
    from dasv_cli.eval.validation import ranking_tsv, validate_checkpoints

    progress.set_quiet(quiet)
    trial_list, trials_name = read_trial_arguments(trial_files, trials)
    run = validate_checkpoints(model, features, trial_list, device=device, skip_missing=skip_missing,
                               progress=not quiet)
    results = run.results
    if json_out:
        import json

        progress.stdout_write(json.dumps(results if model.is_dir() else results[0], indent=2) + "\n")
    else:
        progress.stdout_write(ranking_tsv(results))
    if model.is_dir():
        progress.log(f"best: {results[0]['checkpoint']} (EER {results[0]['eer']:.3f}% on {trials_name})", force=True)
    if run.failed:
        raise typer.Exit(EXIT_PARTIAL)
