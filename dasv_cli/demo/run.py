"""The demo's run: the whole chain (features, train, validate, embed, score) in the demo's working
directory, each step shown as its `dasv` command.

Each step calls the engine that its `dasv` command calls, with the same options, so what the demo
prints is what it ran and can be rerun or changed by hand. Rerunning reuses what is done: stored
features are skipped, a finished training run is resumed (and so kept), a complete embedding table is
kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from dasv_cli.demo.layout import HELD_OUT_SPEAKERS, SELECTION_UTTERANCES, TRAIN_SPEAKERS, DemoLayout, prepare


@dataclass(frozen=True)
class DemoStep:
    """One step: its name, the `dasv` command it is (arguments after `dasv`), and the engine call that
    does what that command does (returns the exit code and, for score, its JSON summary)."""

    name: str
    argv: list[str]
    run: Callable[[], tuple[int, dict[str, Any] | None]]


@dataclass
class DemoRun:
    """The exit code, and the summary (what `dasv demo --json` prints) when every step succeeded."""

    exit_code: int
    summary: dict[str, Any] | None = None


def _cuda_wanted(device: str) -> bool:
    if device == "cpu":
        return False
    import torch

    return torch.cuda.is_available() if device == "auto" else device.startswith("cuda")


def _features(layout: DemoLayout, progress: bool) -> tuple[int, None]:
    from dasv_cli.features.run import featurize
    from dasv_cli.features.tuning import tune_malloc

    tune_malloc()
    result = featurize(layout.audio_list, Path(layout.features), audio_dir=Path(layout.audio), progress=progress)
    return result.exit_code, None


def _train(flags: dict[str, Any], debug: bool) -> tuple[int, None]:
    from dasv_cli.train.start import start

    return start(flags, debug=debug), None  # over ./dasv.toml: the demo's, written by prepare()


def _validate(layout: DemoLayout, device: str, progress: bool) -> tuple[int, None]:
    import sys

    from dasv_cli.eval.validation import ranking_tsv, validate_checkpoints
    from dasv_cli.io.lists import read_trial_pair

    trials = read_trial_pair(layout.clients, layout.impostors)
    run = validate_checkpoints(Path(layout.checkpoint), Path(layout.features), trials, device=device,
                               progress=progress)
    sys.stderr.write(ranking_tsv(run.results))  # the command's stdout: data for the demo, not its reader
    return 0, None


def _embed(layout: DemoLayout, device: str, progress: bool) -> tuple[int, None]:
    from dasv_cli.eval.embed_run import run_embed

    result = run_embed(Path(layout.checkpoint), features=Path(layout.features), output=layout.embeddings,
                       device=device, progress=progress)
    return result.exit_code, None


def _score(layout: DemoLayout) -> tuple[int, dict[str, Any]]:
    from dasv_cli.eval.score_run import print_summary, run_score
    from dasv_cli.io.lists import read_trial_pair

    trials = read_trial_pair(layout.clients, layout.impostors)
    det_plot = Path(layout.det_plot)
    result = run_score(trials, f"{layout.clients} + {layout.impostors}", embeddings=Path(layout.embeddings),
                       det_plot=det_plot, output=layout.scores)
    print_summary(result, det_plot=det_plot, output=layout.scores)
    return 0, result.summary()


def demo_steps(layout: DemoLayout, device: str, resume: bool, *, quiet: bool = False,
               debug: bool = False) -> list[DemoStep]:
    """The demo's steps in order, each with its `dasv` command (as the user would type it, in the
    working directory) and the engine call that does the same."""
    on_device = ["--device", device] if device != "auto" else []
    # `dasv train`'s flags as the command parses them (None: not given), in the order they are shown.
    flags: dict[str, Any] = {"device": device if device != "auto" else None,
                             "precision": "bf16" if _cuda_wanted(device) else None,
                             "print_every": 25, "resume": True if resume else None}
    train = ["train"]
    for name, value in flags.items():
        if value is not None:
            train += [f"--{name.replace('_', '-')}"] + ([] if value is True else [str(value)])
    ckpt, feats, progress = layout.checkpoint, layout.features, not quiet
    return [
        DemoStep("features", ["features", layout.audio_list, "--audio-dir", layout.audio, "-o", feats],
                 lambda: _features(layout, progress)),
        DemoStep("train", train, lambda: _train(flags, debug)),
        DemoStep("validate", ["validate", "--model", ckpt, "--features", feats, layout.clients, layout.impostors,
                              *on_device], lambda: _validate(layout, device, progress)),
        DemoStep("embed", ["embed", "--model", ckpt, "--features", feats, "-o", layout.embeddings, *on_device],
                 lambda: _embed(layout, device, progress)),
        DemoStep("score", ["score", layout.clients, layout.impostors, "--embeddings", layout.embeddings,
                           "-o", layout.scores, "--det-plot", layout.det_plot, "--json"], lambda: _score(layout)),
    ]


def run_demo(output: str | Path, *, fresh: bool = False, max_steps: int = 300, device: str = "auto",
             quiet: bool = False, setup_only: bool = False, debug: bool = False) -> DemoRun:
    """Prepare the working directory, run each step (printing its command first), and summarise.

    A failing step stops the demo with that step's exit code (its error is raised, after a line that
    names the step); the summary comes only when every step succeeded.
    """
    import contextlib
    import os
    import shlex
    import sys
    import time

    from dasv_cli import progress
    from dasv_cli.errors import EXIT_ERROR, EXIT_INTERRUPTED, DasvError

    progress.set_quiet(quiet)
    layout = prepare(output, fresh=fresh, max_steps=max_steps, validate_every=max(1, max_steps // 6))
    workdir = layout.workdir.resolve()
    resume = (workdir / layout.run / "last.pt").exists()
    if setup_only:
        progress.log(f"wrote the demo's lists and dasv.toml in {workdir} (audio/ -> the bundled speech)", force=True)
        return DemoRun(0)
    steps = demo_steps(layout, device, resume, quiet=quiet, debug=debug)
    progress.log(f"[bold]dasv demo[/bold] in {workdir} (each step is the command shown; rerun any by hand)", force=True)
    progress.log(f"$ cd {shlex.quote(str(workdir))}", force=True)

    def failed(name: str, code: int) -> None:
        progress.log(f"[red]dasv demo: step '{name}' failed (exit {code}); fix and rerun `dasv demo -o {output}`[/red]",
                     force=True)

    timings: dict[str, float] = {}
    summary: dict[str, Any] = {}
    previous = os.getcwd()
    os.chdir(workdir)
    try:
        for step in steps:
            shown = ["dasv", *step.argv] + (["--quiet"] if quiet and step.name != "score" else [])
            progress.log(f"[bold cyan]$ {shlex.join(shown)}[/bold cyan]", force=True)
            start = time.perf_counter()
            try:
                # A step's stdout is data for the demo, not for whoever reads the demo's stdout.
                with contextlib.redirect_stdout(sys.stderr):
                    code, payload = step.run()
            except (DasvError, KeyboardInterrupt, OSError) as exc:  # what `dasv` reports as one line
                failed(step.name, exc.exit_code if isinstance(exc, DasvError)
                       else EXIT_INTERRUPTED if isinstance(exc, KeyboardInterrupt) else EXIT_ERROR)
                raise
            timings[step.name] = time.perf_counter() - start
            if code != 0:
                failed(step.name, code)
                return DemoRun(code)
            summary = payload or summary
    finally:
        os.chdir(previous)
    return DemoRun(0, _summary(layout, workdir, max_steps, summary, timings))


def _summary(layout: DemoLayout, workdir: Path, max_steps: int, score: dict[str, Any],
             timings: dict[str, float]) -> dict[str, Any]:
    from dasv_cli.io.checkpoint import load_checkpoint

    ckpt = load_checkpoint(workdir / layout.checkpoint)
    return {
        "workdir": str(workdir),
        "utterances": 5 * (len(TRAIN_SPEAKERS) + len(HELD_OUT_SPEAKERS)),
        "train_speakers": len(TRAIN_SPEAKERS),
        "trial_speakers": len(HELD_OUT_SPEAKERS),
        "trials_held_out": True,
        # best.pt is chosen on other trials (other recordings of the held-out speakers) than those reported
        "selection_trials": _count_lines(workdir / layout.valid_clients) + _count_lines(workdir / layout.valid_impostors),
        "selection_utterances_per_speaker": SELECTION_UTTERANCES,
        "best_step": int(ckpt.get("step", 0)),
        "max_steps": max_steps,
        "trials": score.get("trials"),
        "targets": score.get("targets"),
        "nontargets": score.get("nontargets"),
        "eer": score.get("eer"),
        "min_dcf_p01": score.get("min_dcf_p01"),
        "min_dcf_p05": score.get("min_dcf_p05"),
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


def _count_lines(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
