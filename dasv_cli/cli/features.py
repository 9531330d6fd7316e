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

  dasv features train.txt -o feats/ --augment reverb,noise,music,babble --rir-dir RIRS_NOISES --musan-dir musan

  dasv features train.txt -o feats/ --augment reverb,babble --copies 2 --rir-dir rirs/  [dim]# rirs/ from `dasv rirs`[/dim]

  dasv features train.txt -o feats/ --keep-audio  [dim]# + 16-bit PCM: `dasv train --online-augment`[/dim]

  find musan/noise -name '*.wav' | dasv features - -o noise-store/ --audio-only  [dim]# a waveform store[/dim]

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
    augment: Optional[str] = typer.Option(
        None, "--augment", metavar="KINDS",
        help="Also store augmented copies of every file under KEY#KIND: a comma list of reverb, noise, music, "
             "babble, speed (= speed0.9,speed1.1), all (= reverb,noise,music,babble); KIND:N for N copies.",
        show_default=False),
    copies: int = typer.Option(1, "--copies", "-k", min=1, metavar="K",
                               help="Copies of each random kind named without :N (speed: always one)."),
    rir_dir: Optional[Path] = typer.Option(None, "--rir-dir", metavar="DIR",
                                           help="Room impulse responses for reverb: RIRS_NOISES, or `dasv rirs -o DIR`.",
                                           show_default=False),
    musan_dir: Optional[Path] = typer.Option(None, "--musan-dir", metavar="DIR",
                                             help="MUSAN (noise/ music/ speech/) for noise and music.",
                                             show_default=False),
    keep_audio: bool = typer.Option(False, "--keep-audio",
                                    help="Also store each file's 16 kHz 16-bit PCM beside its features (for "
                                         "`dasv train --online-augment`: ~115 MB per hour, as float32 features)."),
    audio_only: bool = typer.Option(False, "--audio-only",
                                    help="Store the 16-bit PCM only, no features: a waveform store of a noise, "
                                         "music or RIR corpus (`dasv train --noise-store/--rir-store`)."),
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

    With --augment, each file's augmented copies (reverb: a room impulse response; noise 0-15 dB and
    music 5-15 dB SNR from MUSAN; babble: 3-7 other files of LIST at 13-20 dB; speed 0.9/1.1) are made
    from its waveform and stored beside it as KEY#KIND (KEY#KIND-N for copy N), seeded per key, so a
    rerun adds only the missing copies and stores the same numbers; `dasv train --augmented` uses them.

    With --keep-audio each file's 16-bit PCM is stored beside its features (same keys and shards), so
    training can augment every window afresh (`dasv train --online-augment`); --audio-only stores
    the PCM alone, for noise, music and RIR corpora, so a noise window is one read, not a file open.
    """
    import json
    import sys

    from dasv_cli import progress
    from dasv_cli.errors import UsageError
    from dasv_cli.features.augmented import AugmentOptions
    from dasv_cli.features.parts import parse_part
    from dasv_cli.features.run import featurize
    from dasv_cli.features.tuning import tune_malloc

    progress.set_quiet(quiet)
    tune_malloc()
    if dtype not in ("float32", "float16"):
        raise UsageError(f"--dtype must be float32 or float16, got {dtype!r}")
    if augment is None and (rir_dir is not None or musan_dir is not None or copies != 1):
        raise UsageError("--rir-dir, --musan-dir and --copies go with --augment KINDS")
    if keep_audio and audio_only:
        raise UsageError("--audio-only already stores the waveforms (and no features); drop --keep-audio")
    options = AugmentOptions(augment, copies, rir_dir, musan_dir) if augment is not None else None
    content = "audio" if audio_only else "features+audio" if keep_audio else "features"
    result = featurize(audio_list, output, audio_dir=audio_dir, jobs=jobs, dtype=dtype,
                       overwrite=overwrite, shard_frames=shard_frames, progress=not quiet,
                       part=parse_part(part) if part is not None else None, augment=options, content=content)
    if json_out:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    if result.exit_code:
        raise typer.Exit(result.exit_code)
