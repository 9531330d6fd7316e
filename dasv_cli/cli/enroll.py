"""`dasv enroll`: add a speaker (the mean of its recordings' embeddings) to a speakers table."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from dasv_cli.cli.options import chunk_seconds_option, device_option, vad_option

EPILOG = """\
[bold]Examples[/bold]

  dasv enroll alice alice1.flac alice2.m4a --model best.pt -o speakers.h5

  dasv compare unknown.wav --speakers speakers.h5 --model best.pt
"""


def register(app: typer.Typer) -> None:
    app.command("enroll", epilog=EPILOG)(enroll)


def enroll(
    name: str = typer.Argument(..., metavar="NAME", help="The speaker's name (one word).", show_default=False),
    files: List[str] = typer.Argument(..., metavar="FILES...", help="Recordings of the speaker (any format dasv reads).",
                                      show_default=False),
    model: Path = typer.Option(..., "--model", "-m", metavar="CKPT|model.onnx",
                               help="dasv checkpoint (.pt), original .chkpt, or an ONNX model from `dasv export`."),
    output: Path = typer.Option(Path("speakers.h5"), "--output", "-o", metavar="FILE.h5",
                                help="Speakers table: created, or extended (other speakers are kept)."),
    device: str = device_option("For a checkpoint: "),
    chunk_seconds: float = chunk_seconds_option(),
    vad: bool = vad_option(),
) -> None:
    """Enrol NAME: the mean of the L2-normalised embeddings of FILES, stored under NAME in the table.

    Re-enrolling a NAME replaces its vector; a table made with another model is refused.
    """
    from dasv_cli.eval.compare import AudioEmbedder
    from dasv_cli.eval.enroll import enroll as enroll_speaker
    from dasv_cli.progress import log

    got = enroll_speaker(AudioEmbedder(model, device, chunk_seconds, vad), name, files, output)
    verb = "re-enrolled (replacing the previous enrolment)" if got.replaced else "enrolled"
    log(f"{got.name} {verb} from {got.recordings} recording(s); {output} holds {got.speakers} speaker(s)", force=True)
