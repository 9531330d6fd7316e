"""`dasv embed`: one embedding per utterance from a checkpoint, into an embedding table or stdout."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dasv_cli.cli.options import chunk_seconds_option, device_option, vad_option

EPILOG = """\
[bold]Examples[/bold]

  dasv embed --model best.pt --features feats/ -o embeddings.h5

  dasv embed --model best.pt --audio wavs.lst --audio-dir /data/wav -o - | head -2

  dasv embed --model original.chkpt --features feats/ --keys enrol.lst -o enrol.npy

  dasv embed --model best.pt --audio meetings.lst --vad -o meetings.h5

Re-running with an existing .h5 table computes only the keys it does not hold yet. Audio files are
read one at a time and each goes through the network --chunk-seconds at a time, so an hour-long
recording needs no more memory than a short one's chunk (and gets its whole-recording embedding).
"""


def register(app: typer.Typer) -> None:
    app.command("embed", epilog=EPILOG)(embed)


def embed(
    model: Path = typer.Option(..., "--model", "-m", metavar="CKPT|model.onnx",
                               help="dasv checkpoint (.pt), original research-tool .chkpt, or an ONNX model from `dasv export`."),
    features: Optional[Path] = typer.Option(None, "--features", "-f", metavar="DIR",
                                            help="Feature store from `dasv features`."),
    audio: Optional[str] = typer.Option(None, "--audio", metavar="LIST|-",
                                        help="Audio list instead of a store: featurised on the fly with the model's recipe."),
    audio_dir: Optional[Path] = typer.Option(None, "--audio-dir", "-a", metavar="DIR",
                                             help="Prefix for relative paths in --audio (-a, as in `dasv features`)."),
    keys: Optional[str] = typer.Option(None, "--keys", "-k", metavar="LIST",
                                       help="Embed only these keys (one per line)."),
    output: str = typer.Option("embeddings.h5", "--output", "-o", metavar="FILE|-",
                               help="HDF5 table (.h5), text (.txt or '-' for stdout: 'key v1 v2 ...') or .npy (+ .keys.txt)."),
    device: str = device_option(),
    max_frames: int = typer.Option(4000, "--max-frames", min=1,
                                   help="Frames per batch (utterances of equal length share a batch)."),
    chunk_seconds: float = chunk_seconds_option(),
    vad: bool = vad_option(),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Embed every utterance once (whole utterance, batched by equal length, on GPU when present).

    Features are normalised per utterance as the checkpoint was trained (CMN by default). With an
    existing HDF5 table from the same checkpoint, only missing keys are computed; an interrupted run
    keeps what it finished.
    """
    from dasv_cli import progress
    from dasv_cli.errors import UsageError
    from dasv_cli.eval.embed_run import run_embed

    progress.set_quiet(quiet)
    if audio_dir is not None and audio is None:
        hint = " (-a is --audio-dir, as in `dasv features`; the list is --audio LIST)" if audio_dir.is_file() else ""
        raise UsageError(f"--audio-dir goes with --audio{hint}")
    if (features is None) == (audio is None):
        raise UsageError("give exactly one of --features DIR or --audio LIST")
    if vad and audio is None:
        raise UsageError("--vad goes with --audio (a feature store holds no waveforms to find speech in)")
    if audio == "-" and keys == "-":
        raise UsageError("--audio and --keys cannot both read stdin")
    result = run_embed(model, features=features, audio=audio, audio_dir=audio_dir, keys=keys, output=output,
                       device=device, max_frames=max_frames, progress=not quiet, chunk_seconds=chunk_seconds,
                       vad=vad)
    if result.exit_code:
        raise typer.Exit(result.exit_code)
