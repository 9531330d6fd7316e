"""`dasv demo`: the whole chain on the bundled LibriSpeech speech, each step shown as its `dasv` command.

The engine (dasv_cli.demo.run) runs each step through the engine call its command makes; this module
parses the options and prints the summary table (and --json).
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
                               help="Working directory for the demo: new, empty, or one the demo made."),
    fresh: bool = typer.Option(False, "--fresh", help="Remove what the demo wrote in DIR (nothing else) and redo every step."),
    max_steps: int = typer.Option(300, "--max-steps", min=1, help="Training updates."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda (auto: cuda with bf16 when present)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the commands and the summary."),
    setup_only: bool = typer.Option(False, "--setup-only",
                                    help="Only write the lists, trials and dasv.toml (for running the steps by hand)."),
) -> None:
    """Run the whole chain on bundled real speech: features, train, validate, embed, score (+ DET plot)."""
    import json
    import sys

    from dasv_cli.cli.app import debug_enabled
    from dasv_cli.demo.run import run_demo

    result = run_demo(output, fresh=fresh, max_steps=max_steps, device=device, quiet=quiet,
                      setup_only=setup_only, debug=debug_enabled())
    if result.summary is not None:
        _print_summary(result.summary)
        if json_out:
            sys.stdout.write(json.dumps(result.summary) + "\n")
    if result.exit_code:
        raise typer.Exit(result.exit_code)


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
    table.add_row("training", f"{r['max_steps']} updates; best checkpoint at update {r['best_step']}, chosen on "
                              f"{r['selection_trials']} other trials (other recordings of the same held-out "
                              "speakers), not on those reported here")
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
