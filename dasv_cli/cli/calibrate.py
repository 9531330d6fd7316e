"""`dasv calibrate`: labelled scores -> calibration.json (scores to natural-log likelihood ratios)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dasv_cli.cli.options import required_argument, required_output

EPILOG = """\
[bold]Examples[/bold]

  dasv score --trials dev-trials.txt -e dev.h5 -o dev-scores.tsv
  dasv calibrate dev-scores.tsv -o calibration.json

  dasv calibrate dev-scores.tsv -o calibration.json --quality duration --features feats/

  dasv calibrate dev-scores.tsv -o calibration.json --quality duration --durations utt2dur --prior 0.01

SCORES is the TSV `dasv score` writes (key1, key2, score, label). Calibrate on trials held out from those you evaluate on: the summary printed here is on the fitting trials, so it is optimistic.
"""


def register(app: typer.Typer) -> None:
    app.command("calibrate", epilog=EPILOG)(calibrate)


def calibrate(
    scores: str = required_argument("SCORES.tsv|-", "Labelled scores: key1 key2 score label."),
    output: Path = required_output("FILE.json", "Where to write the calibration."),
    prior: float = typer.Option(0.5, "--prior", metavar="P",
                                help="Effective target prior the fit weighs the trials for (0.5: plain Cllr)."),
    quality: Optional[str] = typer.Option(None, "--quality", metavar="MEASURE",
                                          help="Quality measure as extra inputs: 'duration' (needs --features or --durations)."),
    features: Optional[Path] = typer.Option(None, "--features", "-f", metavar="DIR",
                                            help="With --quality duration: durations from this feature store."),
    durations: Optional[Path] = typer.Option(None, "--durations", metavar="FILE",
                                             help="With --quality duration: 'key seconds' lines (Kaldi utt2dur)."),
    max_duration: float = typer.Option(20.0, "--max-duration", metavar="SECONDS",
                                       help="Durations are capped here before the log (as WeSpeaker's QMF)."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", metavar="CKPT|model.onnx",
                                         help="The model whose scores these are (default: the one the scores file's "
                                              "header names); the calibration is refused for any other."),
    json_out: bool = typer.Option(False, "--json", help="Print the calibration JSON on stdout too."),
) -> None:
    """Fit a logistic-regression calibration of scores into natural-log likelihood ratios.

    Prior-weighted as in BOSARIS/NIST practice; the prior's log-odds are removed, so a decision at
    any target prior p accepts where LLR >= -log(p / (1 - p)). Prints Cllr, minCllr, actual and
    minimum DCF at p = 0.01 and 0.05 of the calibrated fitting trials.
    """
    import json

    from dasv_cli.errors import UsageError
    from dasv_cli.eval.calibration import calibrate_score_file, save_calibration
    from dasv_cli.eval.quality import Quality
    from dasv_cli.io.atomic import check_writable
    from dasv_cli.progress import log, stdout_write

    if not 0.0 < prior < 1.0:
        raise UsageError(f"--prior must lie strictly between 0 and 1, got {prior}")
    spec = Quality(measure=quality, max_duration=max_duration) if quality is not None else None
    check_writable(output, "calibration")
    cal = calibrate_score_file(scores, prior, spec, features=features, durations=durations, model=model)
    save_calibration(cal, output)
    t = cal.training
    log(f"calibrated {cal.trials} trials ({cal.targets} target) at prior {cal.prior:g}: "
        f"{formula(cal.offset, cal.weights)}; written to {output}", force=True)
    log(f"on these trials: Cllr {t['cllr']:.4f} (min {t['min_cllr']:.4f})  "
        f"actDCF@0.01 {t['act_dcf_p01']:.4f} (min {t['min_dcf_p01']:.4f})  "
        f"actDCF@0.05 {t['act_dcf_p05']:.4f} (min {t['min_dcf_p05']:.4f})  EER {t['eer']:.3f}%", force=True)
    log(f"fitted for {cal.fitted_for['checkpoint']}: refused for any other model's scores" if cal.fitted_for else
        f"{scores} names no model (written by `dasv score` without one, or to stdout): give --model to tie the "
        f"calibration to the model it is for", force=True)
    if json_out:
        stdout_write(json.dumps(cal.to_dict(), indent=2) + "\n")


def formula(offset: float, weights: dict[str, float]) -> str:
    """The affine map as people write it: `llr = 87.91 * score - 86.37` (each sign once, offset last)."""
    terms = [(w, f" * {name}") for name, w in weights.items()] + [(offset, "")]
    text = "llr ="
    for i, (value, name) in enumerate(terms):
        sign = "-" if value < 0 else ("" if i == 0 else "+")
        text += f" {sign}{' ' if sign and i else ''}{abs(value):.4g}{name}"
    return text
