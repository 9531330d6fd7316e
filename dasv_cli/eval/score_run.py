"""`dasv score` as one engine call: trials + an embedding table (or a checkpoint and a feature store)
-> scores (optionally s-normed), metrics, a DET plot and a scores file; and the summary people read."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from dasv_cli.eval.metrics import Metrics, compute_metrics, metrics_and_det
from dasv_cli.eval.scoring import ScoredTrials, score_table
from dasv_cli.io.atomic import check_writable
from dasv_cli.io.embeddings import read_embeddings
from dasv_cli.io.lists import Trials
from dasv_cli.io.scores import write_scores_file

if TYPE_CHECKING:  # pragma: no cover
    from dasv_cli.eval.llr_metrics import CalibratedSummary

CALIBRATED_KEYS = ("act_dcf_p01", "act_dcf_p05", "cllr", "min_cllr")


@dataclass
class ScoreRun:
    """The scored trials, their metrics, and the seconds it took (reading to metrics, not writing)."""

    scored: ScoredTrials
    metrics: Metrics
    elapsed: float
    calibrated: "CalibratedSummary | None" = None  # with --calibration: the scores are LLRs
    calibration: Optional[str] = None

    def summary(self) -> dict[str, Any]:
        """What `dasv score --json` prints: the metrics, the skipped trials, the s-norm applied, and with
        a calibration its path, actual DCF at p=0.01/0.05, Cllr and minCllr of the LLRs."""
        out = self.metrics.to_dict()
        out["skipped"] = self.scored.skipped
        out["snorm"] = self.scored.snorm
        if self.calibrated is not None:
            cal = self.calibrated.to_dict()
            out.update({k: cal[k] for k in CALIBRATED_KEYS})
            out["calibration"] = self.calibration
        return out


def run_score(trials: Trials, trials_name: str, *, embeddings: Optional[Path] = None,
              model: Optional[Path] = None, features: Optional[Path] = None, device: str = "auto",
              skip_missing: bool = False, cohort: Optional[Path] = None, top_n: int = 300,
              det_plot: Optional[Path] = None, output: Optional[str] = None,
              calibration: Optional[Path] = None, durations: Optional[Path] = None,
              any_model: bool = False) -> ScoreRun:
    """Score `trials` from `embeddings` (default embeddings.h5), or embed them first with `model` from
    `features`; with `calibration` the scores become natural-log LLRs (durations from `features` or
    `durations` when it uses them; refused for another model's scores unless `any_model`); write the DET
    plot and the scores file (`output`, unless None or `-`; its header names the model when known)."""
    cal = _load_checked_calibration(calibration, features, durations)
    if output is not None and output != "-":
        check_writable(output, "scores")
    if det_plot is not None:
        check_writable(det_plot, "DET plot")
    started = time.perf_counter()
    if model is not None:
        from dasv_cli.eval.embed import embed_trials_table

        table, table_name = embed_trials_table(model, features, trials, device=device,
                                               skip_missing=skip_missing), str(features)
    else:
        path = embeddings if embeddings is not None else Path("embeddings.h5")
        table, table_name = read_embeddings(path), str(path)
    cohort_table = read_embeddings(cohort) if cohort is not None else None
    if model is not None:
        from dasv_cli.io.embeddings import model_identity

        source: dict[str, str] | None = model_identity(model)
    else:
        source = {k: str(table.attrs[k]) for k in ("checkpoint", "checkpoint_sha256") if k in table.attrs}
    if cal is not None:
        from dasv_cli.eval.calibration import check_model

        sha = (source or {}).get("checkpoint_sha256")
        check_model(cal, str(calibration), {sha} if sha else set(), str(model or table_name), any_model)

    scored = score_table(table, trials, skip_missing=skip_missing, table_name=table_name,
                         cohort=cohort_table, cohort_name=str(cohort) if cohort else None, top_n=top_n)
    calibrated = None
    if cal is not None:
        from dasv_cli.eval.calibration import calibrate_trials
        from dasv_cli.eval.llr_metrics import calibrated_summary

        scored.scores = calibrate_trials(cal, scored.trials.key1, scored.trials.key2, scored.scores,
                                         features=features, durations=durations)
        calibrated = calibrated_summary(scored.scores, scored.trials.labels)
    if det_plot is not None:
        from dasv_cli.eval.det import plot_det

        metrics, det = metrics_and_det(scored.scores, scored.trials.labels)
        plot_det(det, det_plot, metrics, title=f"DET: {trials_name}" + (" (s-norm)" if scored.snorm else ""))
    else:
        metrics = compute_metrics(scored.scores, scored.trials.labels)
    elapsed = time.perf_counter() - started
    if output is not None and output != "-":
        write_scores_file(Path(output), scored.trials, scored.scores, source)
    return ScoreRun(scored, metrics, elapsed, calibrated, str(calibration) if calibration is not None else None)


def _load_checked_calibration(calibration: Optional[Path], features: Optional[Path], durations: Optional[Path]):
    """The calibration, checked before anything is embedded: one that uses durations needs a source."""
    from dasv_cli.errors import UsageError

    if calibration is None:
        if durations is not None:
            raise UsageError("--durations is for --calibration (a calibration fitted with --quality duration)")
        return None
    from dasv_cli.eval.calibration import load_calibration

    cal = load_calibration(calibration)
    if cal.quality is not None and features is None and durations is None:
        raise UsageError(f"{calibration} uses the {cal.quality.measure} quality measure: give --durations FILE "
                         f"(or --features DIR with --model)")
    return cal


def print_summary(run: ScoreRun, *, det_plot: Optional[Path] = None, output: Optional[str] = None) -> None:
    """The people-facing summary on stderr (shown under --quiet too: it is the result)."""
    from dasv_cli import progress

    progress.log(run.metrics.summary(), force=True)
    if run.calibrated is not None:
        progress.log(f"calibrated ({run.calibration}): {run.calibrated.summary()}", force=True)
    extra = []
    skipped, snorm = run.scored.skipped, run.scored.snorm
    if skipped:
        extra.append(f"skipped {skipped} trial(s) with keys missing from the embeddings")
    if snorm:
        extra.append(f"adaptive s-norm applied (top {snorm['top_n']} of {snorm['cohort_size']} cohort scores)")
    if output and output != "-":
        extra.append(f"scores written to {output}")
    if det_plot is not None:
        extra.append(f"DET plot written to {det_plot}")
    extra.append(f"{run.elapsed:.2f} s")
    progress.log("; ".join(extra), force=True)
