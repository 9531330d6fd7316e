"""`dasv features`: an audio list -> a directory of HDF5 log-mel shards (the paper's recipe)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

EPILOG = """\
[bold]Examples[/bold]

  dasv features train.txt -o feats/ --audio-dir /data/voxceleb1/wav --jobs 8

  find dasv_cli/data/demo -name '*.flac' | dasv features - -o demo-feats/

  dasv features train.txt -o feats/      [dim]# rerun after a crash: skips what is stored[/dim]

  dasv features all.txt -o /nfs/feats --part $SLURM_ARRAY_TASK_ID/8  [dim]# sbatch --array=1-8[/dim]

[bold]Exit codes[/bold]: 0 done; 1 error; 2 usage; 3 done, but some inputs failed (DIR/failed.tsv).
"""


def register(app: typer.Typer) -> None:
    app.command("features", epilog=EPILOG)(features)


def features(
    audio_list: str = typer.Argument(
        ..., metavar="LIST",
        help="Audio paths, one per line ('-' reads stdin); no extension means .wav. Keys = paths without extension.",
        show_default=False,
    ),
    output: Path = typer.Option(Path("features"), "--output", "-o", metavar="DIR",
                                help="Feature store directory (created; shards are added to it)."),
    audio_dir: Optional[Path] = typer.Option(None, "--audio-dir", "-a", metavar="DIR",
                                             help="Prefix for relative paths in LIST."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1,
                                       help="Worker processes, one core each (default: all cores).",
                                       show_default=False),
    dtype: str = typer.Option("float32", "--dtype", metavar="float32|float16",
                              help="Storage type of the features (float16 halves the size)."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Delete the store already in DIR (shards, failed.tsv) and recompute everything."),
    shard_frames: int = typer.Option(250_000, "--shard-frames", min=1, metavar="N",
                                     help="Frames per shard (100 per second of audio). "
                                          "A crash loses at most one shard's work."),
    part: Optional[str] = typer.Option(None, "--part", metavar="I/N",
                                       help="Compute only part I of N (every N-th file from the I-th, I = 1..N), "
                                            "beside the other parts in the same DIR: N jobs (one per machine) "
                                            "fill one store at once.", show_default=False),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary of the run on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or log lines (warnings and errors still shown)."),
) -> None:
    """Compute the paper's 80-band log-mel features for every file in LIST and store them as HDF5 shards.

    Any libsndfile format (wav, flac, ogg); multi-channel audio is mixed to mono, other rates resampled
    to 16 kHz. Raw log-mel is stored with each utterance's mean and std over time (for CMN/CMVN).
    Already stored keys are skipped, so a rerun resumes an interrupted run. Bad inputs are listed in
    DIR/failed.tsv (exit code 3); the rest is stored. With --part I/N, N runs (on one machine or many,
    sharing a file system) fill DIR together; each stores its shards and failed list under names that
    carry its part, and readers (`dasv inspect`, training) see all of them as one store.
    """
    import json
    import sys

    from dasv_cli import progress
    from dasv_cli.errors import UsageError
    from dasv_cli.features.parts import parse_part
    from dasv_cli.features.run import featurize
    from dasv_cli.features.tuning import tune_malloc

    progress.set_quiet(quiet)
    tune_malloc()
    if dtype not in ("float32", "float16"):
        raise UsageError(f"--dtype must be float32 or float16, got {dtype!r}")
    result = featurize(audio_list, output, audio_dir=audio_dir, jobs=jobs, dtype=dtype,
                       overwrite=overwrite, shard_frames=shard_frames, progress=not quiet,
                       part=parse_part(part) if part is not None else None)
    if json_out:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    if result.exit_code:
        raise typer.Exit(result.exit_code)
