"""`dasv demo`: the whole chain on the bundled LibriSpeech speech, each step shown as its `dasv` command.

Every step runs through the same CLI entry point a user types, so what the demo prints is exactly
what it ran and can be rerun or changed by hand.
"""

from __future__ import annotations

import typer

EPILOG = """[bold]Examples[/bold]

  dasv demo                      # prepares ./dasv-demo and runs features -> train -> validate -> embed -> score
  dasv demo -o /tmp/demo --fresh # start again from nothing
  dasv demo --json > summary.json

Rerunning reuses what is done: stored features are skipped and a finished training run is kept."""


def demo_cmd(
    output: str = typer.Option("dasv-demo", "--output", "-o", metavar="DIR",
                               help="Working directory for the demo (created)."),
    fresh: bool = typer.Option(False, "--fresh", help="Delete DIR first and redo every step."),
    max_steps: int = typer.Option(300, "--max-steps", min=1, help="Training updates."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda (auto: cuda with bf16 when present)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the commands and the summary."),
    setup_only: bool = typer.Option(False, "--setup-only",
                                    help="Only write the lists, trials and dasv.toml (for running the steps by hand)."),
) -> None:
    """Run the whole chain on bundled real speech: features, train, validate, embed, score (+ DET plot)."""
    code = run_demo(output, fresh=fresh, max_steps=max_steps, device=device, json_out=json_out, quiet=quiet,
                    setup_only=setup_only)
    if code:
        raise typer.Exit(code)


def _step_commands(layout, device: str, resume: bool) -> list[tuple[str, list[str]]]:
    """The demo's steps as `dasv` argument lists, in order."""
    train = ["train"]
    if device != "auto":
        train += ["--device", device]
    if _cuda_wanted(device):
        train += ["--precision", "bf16"]
    train += ["--print-every", "25"]
    if resume:
        train.append("--resume")
    ckpt = layout.checkpoint
    return [
        ("features", ["features", layout.audio_list, "--audio-dir", layout.audio, "-o", layout.features]),
        ("train", train),
        ("validate", ["validate", "--model", ckpt, "--features", layout.features,
                      layout.clients, layout.impostors] + (["--device", device] if device != "auto" else [])),
        ("embed", ["embed", "--model", ckpt, "--features", layout.features, "-o", layout.embeddings]
         + (["--device", device] if device != "auto" else [])),
        ("score", ["score", layout.clients, layout.impostors, "--embeddings", layout.embeddings,
                   "-o", layout.scores, "--det-plot", layout.det_plot, "--json"]),
    ]


def _cuda_wanted(device: str) -> bool:
    if device == "cpu":
        return False
    import torch

    return torch.cuda.is_available() if device == "auto" else device.startswith("cuda")


def run_demo(output: str, *, fresh: bool, max_steps: int, device: str, json_out: bool, quiet: bool,
             setup_only: bool = False) -> int:
    """Prepare the working directory, run each step in-process, print the summary; returns the exit code."""
    import contextlib
    import io
    import json
    import os
    import shlex
    import sys
    import time
    from pathlib import Path

    from dasv_cli import progress
    from dasv_cli.cli.app import run
    from dasv_cli.demo import HELD_OUT_SPEAKERS, TRAIN_SPEAKERS, prepare

    progress.set_quiet(quiet)
    layout = prepare(output, fresh=fresh, max_steps=max_steps, validate_every=max(1, max_steps // 6))
    workdir = layout.workdir.resolve()
    resume = (workdir / layout.run / "last.pt").exists()
    if setup_only:
        progress.log(f"wrote the demo's lists and dasv.toml in {workdir} (audio/ -> the bundled speech)", force=True)
        return 0
    steps = _step_commands(layout, device, resume)
    progress.log(f"[bold]dasv demo[/bold] in {workdir} (each step is the command shown; rerun any by hand)", force=True)
    progress.log(f"$ cd {shlex.quote(str(workdir))}", force=True)

    timings: dict[str, float] = {}
    summary: dict = {}
    previous = os.getcwd()
    os.chdir(workdir)
    try:
        for name, argv in steps:
            shown = ["dasv", *argv] + (["--quiet"] if quiet and name != "score" else [])
            progress.log(f"[bold cyan]$ {shlex.join(shown)}[/bold cyan]", force=True)
            captured = io.StringIO()
            start = time.perf_counter()
            # Steps' stdout is data for the demo, not for whoever reads the demo's stdout.
            with contextlib.redirect_stdout(captured if name == "score" else sys.stderr):
                code = run(shown[1:])
            timings[name] = time.perf_counter() - start
            if code != 0:
                progress.log(f"[red]dasv demo: step '{name}' failed (exit {code}); fix and rerun `dasv demo -o {output}`[/red]",
                             force=True)
                return code
            if name == "score":
                summary = json.loads(captured.getvalue())
    finally:
        os.chdir(previous)

    from dasv_cli.io.checkpoint import load_checkpoint

    ckpt = load_checkpoint(workdir / layout.checkpoint)
    result = {
        "workdir": str(workdir),
        "utterances": 5 * (len(TRAIN_SPEAKERS) + len(HELD_OUT_SPEAKERS)),
        "train_speakers": len(TRAIN_SPEAKERS),
        "trial_speakers": len(HELD_OUT_SPEAKERS),
        "trials_held_out": True,
        "best_step": int(ckpt.get("step", 0)),
        "max_steps": max_steps,
        "trials": summary.get("trials"),
        "targets": summary.get("targets"),
        "nontargets": summary.get("nontargets"),
        "eer": summary.get("eer"),
        "min_dcf_p01": summary.get("min_dcf_p01"),
        "min_dcf_p05": summary.get("min_dcf_p05"),
        "seconds": {k: round(v, 2) for k, v in timings.items()},
        "outputs": {
            "features": str(workdir / layout.features),
            "checkpoint": str(workdir / layout.checkpoint),
            "embeddings": str(workdir / layout.embeddings),
            "scores": str(workdir / layout.scores),
            "det_plot": str(workdir / layout.det_plot),
            "config": str(workdir / layout.config),
        },
    }
    _print_summary(result)
    if json_out:
        sys.stdout.write(json.dumps(result) + "\n")
    return 0


def _print_summary(r: dict) -> None:
    from rich.table import Table

    from dasv_cli import progress

    table = Table(title="dasv demo", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("utterances", f"{r['utterances']} (bundled LibriSpeech test-other, 16 kHz)")
    table.add_row("speakers", f"{r['train_speakers']} trained on, {r['trial_speakers']} held out for the trials")
    table.add_row("trials", f"{r['trials']} ({r['targets']} same-speaker, {r['nontargets']} different) "
                            "on held-out speakers the model never heard")
    table.add_row("training", f"{r['max_steps']} updates; best checkpoint at update {r['best_step']} "
                              "(picked on these same trials, so the EER is optimistic)")
    table.add_row("EER", f"{r['eer']:.2f} %")
    table.add_row("minDCF", f"{r['min_dcf_p01']:.3f} (p=0.01), {r['min_dcf_p05']:.3f} (p=0.05)")
    table.add_row("time", ", ".join(f"{k} {v:.1f} s" for k, v in r["seconds"].items()))
    for k, v in r["outputs"].items():
        table.add_row(k, v)
    progress.console().print(table)
    progress.console().print("A tiny model on 25 training utterances: the number shows the chain works, "
                             "not what the paper's model reaches on VoxCeleb.")


def register(app: typer.Typer) -> None:
    app.command("demo", epilog=EPILOG)(demo_cmd)
