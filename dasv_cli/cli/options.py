"""Option declarations that several commands share (a required input argument and -o output, trial
arguments, device), and the reading of the trial arguments into one trial list, so that every command
takes and checks them the same way."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional

import typer

if TYPE_CHECKING:  # pragma: no cover
    from dasv_cli.io.lists import Trials

TRIAL_PAIR_HELP = "The original pair of trial files: same-speaker pairs, then different-speaker pairs"
DEVICE_HELP = "cpu, cuda, cuda:N or auto (cuda when present)."


def required_argument(metavar: str, help: str) -> Any:
    """A positional input the command cannot run without (no default to show)."""
    return typer.Argument(..., metavar=metavar, help=help, show_default=False)


def required_output(metavar: str, help: str) -> Any:
    """-o/--output where the command has no default place to write (`metavar` names the form, e.g. FILE.json)."""
    return typer.Option(..., "--output", "-o", metavar=metavar, help=help, show_default=False)


def trial_files_argument(detail: str = "") -> Any:
    """CLIENTS IMPOSTORS: the original tool's pair of trial files (`detail` adds to the help)."""
    return typer.Argument(None, metavar="CLIENTS IMPOSTORS", help=f"{TRIAL_PAIR_HELP}{detail}.", show_default=False)


def trials_option(forms: str) -> Any:
    """--trials FILE|-: one trial list; `forms` says which forms, as the command's help puts it."""
    return typer.Option(None, "--trials", "-t", metavar="FILE|-", help=f"One trial list{forms}; '-' reads stdin.")


def device_option(when: str = "") -> Any:
    """--device: `when` says when the device matters (e.g. "With --model: ")."""
    return typer.Option("auto", "--device", metavar="DEVICE", help=when + DEVICE_HELP)


def chunk_seconds_option() -> Any:
    """--chunk-seconds: audio through the front-end at a time (memory, not the result, depends on it)."""
    return typer.Option(10.0, "--chunk-seconds", metavar="S",
                        help="Seconds of audio through the network at a time: bounds memory on long recordings "
                             "(the embedding is the whole recording's either way).")


def vad_option() -> Any:
    """--vad: embed only what Silero VAD calls speech (the 'vad' extra)."""
    return typer.Option(False, "--vad", help="Drop non-speech first (Silero VAD; pip install 'dasv[vad]'); "
                                             "each file's share of speech goes to stderr.")


def read_trial_arguments(trial_files: Optional[List[Path]], trials: Optional[str]) -> tuple["Trials", str]:
    """(Trials, display name) from CLIENTS IMPOSTORS or --trials; contradictions are usage errors."""
    from dasv_cli.errors import UsageError
    from dasv_cli.io.lists import read_trial_pair, read_trials

    files = list(trial_files or [])
    if trials is not None and files:
        raise UsageError("give either CLIENTS IMPOSTORS or --trials, not both")
    if trials is not None:
        return read_trials(trials), ("<stdin>" if trials == "-" else trials)
    if len(files) == 2:
        return read_trial_pair(files[0], files[1]), f"{files[0]} + {files[1]}"
    if len(files) == 1:
        raise UsageError(f"got one trial file ({files[0]}); give CLIENTS and IMPOSTORS, or use --trials FILE")
    if files:
        raise UsageError(f"expected two trial files (CLIENTS IMPOSTORS), got {len(files)}")
    raise UsageError("no trials: give CLIENTS IMPOSTORS or --trials FILE (or '-' for stdin)")
