"""`dasv rirs`: simulate room impulse responses (image method) as a RIRS_NOISES-like tree."""

from __future__ import annotations

from pathlib import Path

import typer

from dasv_cli.cli.options import required_output

EPILOG = """\
[bold]Examples[/bold]

  dasv rirs -o rirs/ --count 3000

  dasv rirs -o rirs/ --count 60000 --per-room 100     [dim]# Kaldi's 3 x 200 rooms x 100 RIRs[/dim]

  dasv rirs -o rirs/ --count 3000                      [dim]# rerun after an interruption: writes only what is missing[/dim]

Rooms are drawn as Kaldi's simulated RIRs (Ko et al. 2017): length and width 1-10 / 10-30 / 30-50 m, height 2-5 m, wall absorption 0.2-0.8, sources within 5 m of the microphone.

The tree (simulated_rirs/SIZE/RoomNNN/RoomNNN-MMMMM.wav, a Kaldi rir_list and room_info per size) is an RIR directory for reverb augmentation.

[bold]Exit codes[/bold]: 0 done; 1 error; 2 usage; 130 interrupted (the files written are kept).
"""


def register(app: typer.Typer) -> None:
    app.command("rirs", epilog=EPILOG)(rirs)


def rirs(
    output: Path = required_output("DIR", "Directory of the RIR tree (created; a rerun adds what is missing)."),
    count: int = typer.Option(..., "--count", "-n", min=1, metavar="N",
                              help="Number of RIRs, spread evenly over small, medium and large rooms.",
                              show_default=False),
    seed: int = typer.Option(0, "--seed", help="Seed of the room and source draws (RIR i is the same for any N)."),
    rate: int = typer.Option(16000, "--rate", min=1000, metavar="HZ", help="Sample rate of the RIRs."),
    per_room: int = typer.Option(100, "--per-room", min=1, metavar="K",
                                 help="RIRs (source positions) per room, as Kaldi's 100."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or log lines."),
) -> None:
    """Simulate N room impulse responses with the image method and write them as WAV files."""
    import json
    import sys

    from dasv_cli import progress
    from dasv_cli.augment.rirset import write_rirs

    progress.set_quiet(quiet)
    bar = progress.make_progress()
    task = bar.add_task("rirs", total=count)
    shown = []

    def advance(done: int, total: int, written: int) -> None:
        if not shown:  # only once the checks passed: an error stays one line
            bar.start()
            shown.append(True)
        bar.update(task, completed=done)

    try:
        result = write_rirs(output, count, seed=seed, rate=rate, per_room=per_room, on_progress=advance)
    finally:
        if shown:
            bar.stop()
    progress.log(f"{result.written} RIRs written, {result.skipped} already there, in {result.seconds:.1f} s "
                 f"-> {output} ({len(result.lists)} rir_list files)")
    if json_out:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
