"""`dasv validate`: EER and minDCF of one checkpoint, or of every checkpoint in a directory (ranked)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

EPILOG = """\
[bold]Examples[/bold]

  dasv validate --model best.pt --features feats/ clients.lst impostors.lst

  dasv validate --model runs/exp1/ --features feats/ --trials voxceleb1-veri_test.txt --json

stdout: one TSV row per checkpoint (rank, checkpoint, eer, min_dcf_p01, min_dcf_p05, eer_threshold,
trials), best EER first; --json prints the same as a JSON list.
"""

CHECKPOINT_SUFFIXES = (".pt", ".chkpt", ".pth")


def register(app: typer.Typer) -> None:
    app.command("validate", epilog=EPILOG)(validate)


def validate(
    trial_files: Optional[List[Path]] = typer.Argument(
        None, metavar="CLIENTS IMPOSTORS",
        help="The original pair of trial files: same-speaker pairs, then different-speaker pairs.",
        show_default=False,
    ),
    model: Path = typer.Option(..., "--model", "-m", metavar="CKPT|DIR",
                               help="A checkpoint (.pt / original .chkpt), or a directory of them to rank."),
    features: Path = typer.Option(..., "--features", "-f", metavar="DIR", help="Feature store holding the trial utterances."),
    trials: Optional[str] = typer.Option(None, "--trials", "-t", metavar="FILE|-",
                                         help="One trial list (VoxCeleb or Kaldi form); '-' reads stdin."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto (cuda when present)."),
    skip_missing: bool = typer.Option(False, "--skip-missing", help="Skip trials whose utterances are not in the store."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress; summaries are still printed."),
) -> None:
    """Validate checkpoints on a trial list: each unique utterance is embedded once per checkpoint.

    Prints EER, minDCF@0.01/0.05 and the EER threshold; a directory of checkpoints is ranked by EER.
    """
    from dasv_cli import progress
    from dasv_cli.cli.score import read_trial_arguments
    from dasv_cli.errors import EXIT_PARTIAL, DasvError, InputError
    from dasv_cli.eval import embed as engine
    from dasv_cli.eval.metrics import compute_metrics
    from dasv_cli.eval.scoring import score_table

    progress.set_quiet(quiet)
    trial_list, trials_name = read_trial_arguments(trial_files, trials)
    if model.is_dir():
        # Recursive, so `runs/` ranks the checkpoints of every run in it (runs/<name>/best.pt ...).
        candidates = sorted(p for p in model.rglob("*") if p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES
                            and not p.name.startswith("."))
        if not candidates:
            raise InputError(f"{model}: no checkpoints (*.pt, *.chkpt) in this directory or below it")
    else:
        candidates = [model]
    dev = engine.resolve_device(device)

    results = []
    failed: list[tuple[Path, str]] = []
    for path in candidates:
        try:
            loaded = engine.load_extractor(path, dev)
            table = engine.embed_trials_table(path, features, trial_list, device=dev, skip_missing=skip_missing,
                                              progress=not quiet, model_and_ckpt=loaded)
            scored = score_table(table, trial_list, skip_missing=skip_missing,
                                 table_name=f"the feature store {features}")
            metrics = compute_metrics(scored.scores, scored.trials.labels)
        except DasvError as exc:
            if len(candidates) == 1:
                raise
            progress.warn(f"{path}: skipped: {exc.message}")
            failed.append((path, exc.message))
            continue
        row = metrics.to_dict()
        row.update({"checkpoint": str(path), "step": int(loaded[1].get("step") or 0), "skipped": scored.skipped})
        results.append(row)
        progress.log(f"{path}: {metrics.summary()}" + (f"; skipped {scored.skipped} trial(s)" if scored.skipped else ""),
                     force=True)

    if not results:
        raise InputError(f"{model}: none of the {len(candidates)} checkpoints could be validated")
    results.sort(key=lambda r: (r["eer"], r["min_dcf_p01"]))
    for rank, row in enumerate(results, start=1):
        row["rank"] = rank
    if json_out:
        import json

        progress.stdout_write(json.dumps(results if model.is_dir() else results[0], indent=2) + "\n")
    else:
        lines = ["rank\tcheckpoint\teer\tmin_dcf_p01\tmin_dcf_p05\teer_threshold\ttrials\n"]
        for r in results:
            lines.append(f"{r['rank']}\t{r['checkpoint']}\t{r['eer']:.4f}\t{r['min_dcf_p01']:.4f}\t"
                         f"{r['min_dcf_p05']:.4f}\t{r['eer_threshold']:.6f}\t{r['trials']}\n")
        progress.stdout_write("".join(lines))
    if model.is_dir():
        progress.log(f"best: {results[0]['checkpoint']} (EER {results[0]['eer']:.3f}% on {trials_name})", force=True)
    if failed:
        raise typer.Exit(EXIT_PARTIAL)
