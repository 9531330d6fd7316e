"""`dasv compare`: are two recordings the same speaker? Cosine (and calibrated LLR) of audio files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from dasv_cli.cli.options import chunk_seconds_option, device_option, vad_option

if TYPE_CHECKING:  # pragma: no cover
    from dasv_cli.eval.compare import AudioEmbedder

EPILOG = """\
[bold]Examples[/bold]

  dasv compare a.flac b.m4a --model best.pt

  dasv compare a.wav b.wav --model model.onnx --calibration cal.json --prior 0.05

  dasv compare --pairs pairs.txt --model best.pt > cosines.tsv

  dasv compare unknown.flac --speakers speakers.h5 --model best.pt

  dasv compare meeting.wav interview.m4a --model best.pt --vad --json
"""


def register(app: typer.Typer) -> None:
    app.command("compare", epilog=EPILOG)(compare)


def compare(
    files: Optional[List[str]] = typer.Argument(None, metavar="A B", help="Two audio files (any format dasv reads); one with --speakers.",
                                                show_default=False),
    model: Path = typer.Option(..., "--model", "-m", metavar="CKPT|model.onnx",
                               help="dasv checkpoint (.pt), original .chkpt, or an ONNX model from `dasv export`."),
    pairs: Optional[str] = typer.Option(None, "--pairs", metavar="FILE|-",
                                        help="'pathA pathB' lines (TAB-separated when paths have spaces) instead of A B."),
    speakers: Optional[Path] = typer.Option(None, "--speakers", metavar="FILE.h5",
                                            help="Rank the speakers enrolled here (`dasv enroll`) against one recording TEST."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", metavar="CAL.json",
                                               help="Add the LLR and a same/different decision (from `dasv calibrate`)."),
    prior: float = typer.Option(0.01, "--prior", metavar="P",
                                help="Target prior of the decision: 'same' where LLR >= -log(P / (1 - P))."),
    any_model: bool = typer.Option(False, "--any-model",
                                   help="Apply --calibration even with another model than it was fitted for."),
    device: str = device_option("For a checkpoint: "),
    chunk_seconds: float = chunk_seconds_option(),
    vad: bool = vad_option(),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON (with each file's speech "
                                                        "share under --vad) instead of TSV."),
) -> None:
    """Embed audio files and print `A<TAB>B<TAB>cosine` per pair (with --calibration also LLR and same/different).

    With --speakers, one recording TEST is ranked against the enrolled speakers: `name<TAB>cosine`, best first
    (with --calibration also LLR and same/different). The decision threshold and its prior go to stderr.

    Each file is featurised as `dasv embed --audio` does and embedded once, however many pairs name it.
    """
    import json

    from dasv_cli.errors import UsageError
    from dasv_cli.eval.compare import AudioEmbedder, Pair, compare_pairs, decision_note, read_pairs
    from dasv_cli.progress import log, stdout_write

    files = files or []
    if not 0.0 < prior < 1.0:
        raise UsageError(f"--prior must lie strictly between 0 and 1, got {prior}")
    if calibration is None and prior != 0.01:
        raise UsageError("--prior is for --calibration (the decision needs LLRs)")
    if speakers is not None:
        if len(files) != 1 or pairs is not None:
            raise UsageError("--speakers takes one recording TEST (no --pairs)")
        _rank(AudioEmbedder(model, device, chunk_seconds, vad), files[0], speakers, calibration, prior, json_out)
        return
    if pairs is not None:
        if files:
            raise UsageError("give either two audio files or --pairs, not both")
        pair_list = read_pairs(pairs)
    elif len(files) == 2:
        pair_list = [Pair(files[0], files[1])]
    else:
        raise UsageError(f"compare takes two audio files A B (or --pairs FILE), got {len(files)}")
    embedder = AudioEmbedder(model, device, chunk_seconds, vad)
    results = compare_pairs(embedder, pair_list, calibration, prior, any_model=any_model)
    if json_out:
        stdout_write(json.dumps({"pairs": [r.to_dict() for r in results], "speech": embedder.speech}, indent=2)
                     + "\n")
    else:
        stdout_write("".join(r.line() + "\n" for r in results))
    log(f"{len(results)} pair(s), {embedder.embedded} file(s) embedded with {model}")
    if calibration is not None:
        log(decision_note(prior), force=True)


def _rank(embedder: "AudioEmbedder", test: str, speakers: Path, calibration: Optional[Path], prior: float,
          json_out: bool = False) -> None:
    """`name<TAB>cosine` per enrolled speaker, best first; with a calibration also LLR and same/different
    (`--json`: the same as JSON, with the file's speech share under --vad)."""
    import json

    from dasv_cli.eval.compare import decision_note
    from dasv_cli.eval.enroll import rank_calibrated, rank_speakers
    from dasv_cli.progress import log, stdout_write

    if calibration is None:
        ranked = rank_speakers(embedder, test, speakers)
        if json_out:
            stdout_write(json.dumps({"ranking": [{"speaker": n, "cosine": s} for n, s in ranked],
                                     "speech": embedder.speech}, indent=2) + "\n")
        else:
            stdout_write("".join(f"{name}\t{score:.6f}\n" for name, score in ranked))
        return
    rows = rank_calibrated(embedder, test, speakers, calibration, prior)
    if json_out:
        stdout_write(json.dumps({"ranking": [{"speaker": n, "cosine": s, "llr": llr, "decision": "same" if same
                                              else "different"} for n, s, llr, same in rows],
                                 "speech": embedder.speech}, indent=2) + "\n")
        log(decision_note(prior), force=True)
        return
    stdout_write("".join(f"{name}\t{score:.6f}\t{llr:.6f}\t{'same' if same else 'different'}\n"
                         for name, score, llr, same in rows))
    log(decision_note(prior), force=True)
