"""`dasv prepare voxceleb|kaldi|trials`: corpus layouts -> the lists the other commands read."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

EPILOG = """\
[bold]Examples[/bold]

  dasv prepare voxceleb /data/voxceleb1 -o vox1 --trials veri_test2.txt --trials list_test_hard2.txt
  dasv features vox1/audio.lst -o vox1/feats
  dasv validate --model best.pt --features vox1/feats --trials vox1/trials/veri_test2.txt

  dasv prepare voxceleb /data/voxceleb2/dev/aac -o vox2   [dim]# m4a as shipped, no conversion[/dim]

  dasv prepare kaldi data/train -o train
  dasv prepare trials train/train_labels.txt -n 20000 --seed 1 -o train

[bold]Exit codes[/bold]: 0 done; 1 error (file:line); 2 usage; 3 done, but some files were unreadable (DIR/skipped.tsv).
"""

_TRIALS_HELP = ("Trial list to check and convert (VoxCeleb '1|0 path1 path2' or Kaldi 'utt1 utt2 target|nontarget'); "
                "repeat for several. Written as DIR/trials/NAME.txt.")


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help="Corpus layouts -> dasv lists (audio.lst, train_labels.txt, trials).",
                      no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]},
                      rich_markup_mode="rich")
    sub.command("voxceleb", epilog=EPILOG)(voxceleb)
    sub.command("kaldi", epilog=EPILOG)(kaldi)
    sub.command("trials", epilog=EPILOG)(trials)
    app.add_typer(sub, name="prepare", epilog=EPILOG)


def _report(summary, json_out: bool) -> None:
    import json

    from rich.markup import escape

    from dasv_cli import progress

    for line in summary.lines():
        progress.log(escape(line), force=True)
    if json_out:
        progress.stdout_write(json.dumps(summary.to_dict(), indent=2) + "\n")
    if summary.exit_code:
        progress.warn(f"{len(summary.skipped)} unreadable files left out of the lists")
        raise typer.Exit(summary.exit_code)


def voxceleb(
    root: Path = typer.Argument(..., metavar="ROOT", show_default=False,
                                help="VoxCeleb1 or 2 (dev or test): the directory of idNNNNN/ speaker dirs, or one above it."),
    output: Path = typer.Option(Path("prepared"), "--output", "-o", metavar="DIR", help="Where the lists are written."),
    trial_files: Optional[List[Path]] = typer.Option(None, "--trials", "-t", metavar="FILE", help=_TRIALS_HELP),
    drop_missing: bool = typer.Option(False, "--drop-missing", help="Leave out trials naming files that are not under ROOT (counted) instead of failing."),
    keep_trial_speakers: bool = typer.Option(False, "--keep-trial-speakers", help="Also put the speakers of the trial lists in train_labels.txt."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar (the summary is still printed)."),
) -> None:
    """A VoxCeleb1/2 tree (idNNNNN/VIDEO/NNNNN.wav or .m4a) -> audio.lst, train_labels.txt, trials.

    Keys are the paths relative to the data dir without extension, as in the official trial lists,
    whose keys are checked; speakers are the idNNNNN names. Prints speakers, utterances and hours
    (from the file headers). Speakers of the trial lists stay out of train_labels.txt.
    """
    from dasv_cli import progress
    from dasv_cli.prepare.voxceleb import prepare_voxceleb

    progress.set_quiet(quiet)
    _report(prepare_voxceleb(root, output, trial_files or (), drop_missing, keep_trial_speakers,
                             show_progress=not quiet), json_out)


def kaldi(
    data_dir: Path = typer.Argument(..., metavar="DATA_DIR", show_default=False,
                                    help="A Kaldi data dir: wav.scp ('utt path'), utt2spk, optional trials."),
    output: Path = typer.Option(Path("prepared"), "--output", "-o", metavar="DIR", help="Where the lists are written."),
    trial_files: Optional[List[Path]] = typer.Option(None, "--trials", "-t", metavar="FILE",
                                                     help=_TRIALS_HELP + " DATA_DIR/trials is taken when present."),
    drop_missing: bool = typer.Option(False, "--drop-missing", help="Leave out trials naming utterances not in wav.scp (counted) instead of failing."),
    keep_trial_speakers: bool = typer.Option(False, "--keep-trial-speakers", help="Also put the speakers of the trial lists in train_labels.txt."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar (the summary is still printed)."),
) -> None:
    """A Kaldi data dir (wav.scp, utt2spk, trials) -> audio.lst, train_labels.txt, trials.

    audio.lst lines are 'utt<TAB>path', so features are stored under the utt ids. Command pipes,
    stdin and archive offsets in wav.scp are refused with their line, never run.
    """
    from dasv_cli import progress
    from dasv_cli.prepare.kaldi import prepare_kaldi

    progress.set_quiet(quiet)
    _report(prepare_kaldi(data_dir, output, trial_files or (), drop_missing, keep_trial_speakers,
                          show_progress=not quiet), json_out)


def trials(
    labels: Path = typer.Argument(..., metavar="LABELS", show_default=False,
                                  help="Label file: 'key speaker' or 'key label [x]' (e.g. DIR/train_labels.txt)."),
    n: int = typer.Option(..., "-n", "--num-trials", min=2, metavar="N", help="How many trials: N/2 same-speaker, the rest different-speaker."),
    seed: int = typer.Option(0, "--seed", help="Random seed (the same seed gives the same list)."),
    output: Path = typer.Option(Path("prepared"), "--output", "-o", metavar="DIR", help="DIR/trials.txt is written."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Draw N balanced trials from a label file -> DIR/trials.txt ('1|0 key1 key2').

    For corpora that ship no trial list (LibriSpeech): N/2 same-speaker pairs and the rest
    different-speaker, among the file's utterances, no self-pairs, no pair twice, seeded.
    """
    import json

    from rich.markup import escape

    from dasv_cli import progress
    from dasv_cli.prepare.trials import prepare_trials

    drawn = prepare_trials(labels, n, seed, output)
    d = drawn.to_dict()
    progress.log(escape(f"trials  {d['trials']} ({d['targets']} target, {d['nontargets']} non-target) among "
                 f"{d['utterances_used']} utterances of {d['speakers']} speakers; seed {seed}"), force=True)
    progress.log(escape(f"written {', '.join(drawn.written)}"), force=True)
    if json_out:
        progress.stdout_write(json.dumps(d, indent=2) + "\n")
