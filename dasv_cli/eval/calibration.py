"""Score calibration: raw scores (and quality measures) -> natural-log likelihood ratios.

The map is affine, llr = offset + w_score * score + sum_k w_k * q_k, fitted by prior-weighted logistic
regression as in BOSARIS / NIST SRE practice: the target trials together weigh `prior` and the
non-targets `1 - prior`, whatever their counts, so the fit minimises Cllr at that effective prior
(0.5 by default: plain Cllr, the application-independent cost, which is also what WeSpeaker's QMF
minimises). Logistic regression models the posterior log-odds, which is the LLR plus the prior's
log-odds logit(prior); that term is removed from the intercept, so the output is an LLR that any
application prior can threshold at -logit(p).

With a quality measure (quality.py: the two utterances' log-durations, as WeSpeaker's QMF) the
quality inputs enter the same affine map. The JSON written by `save_calibration` holds everything
`apply_calibration` needs: offset, weights per input, the prior, the trial counts, the quality measure,
and the calibrated summary on the fitting trials (optimistic: the same trials were fitted).

A calibration belongs to the model whose scores it was fitted on (`fitted_for`: the checkpoint's path
and sha256, as an embedding table and a speakers file name theirs; read from the scores file's
header, or `dasv calibrate --model`). Applied to another model's scores it is refused (`check_model`)
unless the user passes --any-model; one that names no model (an earlier dasv's, or scores that did not
say) is applied with a warning.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Collection, Sequence

import numpy as np

from dasv_cli.errors import InputError, UsageError
from dasv_cli.eval.quality import QUALITY_MEASURES, Quality, trial_quality

CALIBRATION_FORMAT = "dasv-calibration"
CALIBRATION_VERSION = 1
DEFAULT_PRIOR = 0.5


@dataclass
class Calibration:
    """An affine map to LLRs: `offset` plus `weights[name] * input` over the inputs, score first."""

    offset: float
    weights: dict[str, float]
    prior: float
    trials: int
    targets: int
    nontargets: int
    quality: Quality | None = None
    training: dict[str, Any] = field(default_factory=dict)  # calibrated_summary on the fitting trials
    source: str | None = None
    fitted_for: dict[str, str] | None = None  # {"checkpoint", "checkpoint_sha256"} of the scores' model

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(self.weights)

    def to_dict(self) -> dict[str, Any]:
        from dasv_cli import __version__

        return {
            "format": CALIBRATION_FORMAT,
            "version": CALIBRATION_VERSION,
            "dasv_version": __version__,
            "model": "logistic-regression",
            "output": "natural-log likelihood ratio",
            "offset": self.offset,
            "weights": dict(self.weights),
            "prior": self.prior,
            "trials": self.trials,
            "targets": self.targets,
            "nontargets": self.nontargets,
            "quality": self.quality.to_dict() if self.quality is not None else None,
            "training": dict(self.training),
            "source": self.source,
            "fitted_for": dict(self.fitted_for) if self.fitted_for else None,
        }

    @classmethod
    def from_dict(cls, data: Any, name: str = "calibration") -> "Calibration":
        """From the JSON form; anything missing or of the wrong kind is one InputError naming `name`."""
        if not isinstance(data, dict) or data.get("format") != CALIBRATION_FORMAT:
            raise InputError(f"{name}: not a dasv calibration (no '{CALIBRATION_FORMAT}' format tag)")
        version = data.get("version")
        if not isinstance(version, int) or version > CALIBRATION_VERSION:
            raise InputError(f"{name}: calibration format version {version!r} is newer than this dasv "
                             f"understands ({CALIBRATION_VERSION}); upgrade dasv")
        try:
            weights = {str(k): _finite(v, f"weights.{k}") for k, v in dict(data["weights"]).items()}
            offset = _finite(data["offset"], "offset")
            prior = _finite(data["prior"], "prior")
            counts = [int(data[k]) for k in ("trials", "targets", "nontargets")]
            q = data.get("quality")
            quality = None
            if q is not None:
                if q.get("measure") not in QUALITY_MEASURES:
                    raise ValueError(f"unknown quality measure {q.get('measure')!r}")
                quality = Quality(measure=q["measure"], max_duration=_finite(q["max_duration"], "max_duration"),
                                  source=q.get("source"))
            fitted = data.get("fitted_for")
            if fitted is not None and not (isinstance(fitted, dict) and isinstance(fitted.get("checkpoint_sha256"), str)):
                raise ValueError("'fitted_for' names no checkpoint_sha256")
        except UsageError as exc:
            raise InputError(f"{name}: unusable calibration ({exc.message})") from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            what = f"no {exc.args[0]!r} entry" if isinstance(exc, KeyError) else str(exc)
            raise InputError(f"{name}: unusable calibration ({what})") from None
        expected = ("score",) + (quality.features if quality is not None else ())
        if tuple(weights) != expected:
            raise InputError(f"{name}: calibration inputs {list(weights)} do not match its quality measure "
                             f"(expected {list(expected)})")
        return cls(offset=offset, weights=weights, prior=prior, trials=counts[0], targets=counts[1],
                   nontargets=counts[2], quality=quality, training=dict(data.get("training") or {}),
                   source=data.get("source"), fitted_for=fitted)


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{what} is not a number")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{what} is not finite")
    return v


def _check_prior(prior: float) -> float:
    if not 0.0 < float(prior) < 1.0:
        raise UsageError(f"--prior must lie strictly between 0 and 1, got {prior}")
    return float(prior)


def fit_calibration(scores: Any, labels: Any, prior: float = DEFAULT_PRIOR, quality: np.ndarray | None = None,
                    quality_spec: Quality | None = None, source: str | None = None) -> Calibration:
    """Prior-weighted logistic regression of `labels` on scores (and quality inputs) -> Calibration.

    `quality` is [n, k] (e.g. duration_quality) and goes with `quality_spec`; both or neither.
    """
    from sklearn.linear_model import LogisticRegression

    from dasv_cli.eval.llr_metrics import calibrated_summary
    from dasv_cli.eval.metrics import _check

    prior = _check_prior(prior)
    s, y = _check(scores, labels)
    if (quality is None) != (quality_spec is None):
        raise ValueError("quality inputs and their Quality spec go together")
    names = ("score",) + (quality_spec.features if quality_spec is not None else ())
    x = s.astype(np.float64)[:, None]
    if quality is not None:
        q = np.asarray(quality, dtype=np.float64)
        if q.shape != (s.size, len(names) - 1):
            raise ValueError(f"quality inputs have shape {q.shape}, expected {(s.size, len(names) - 1)}")
        x = np.concatenate([x, q], axis=1)
    n_tar = int(np.count_nonzero(y))
    n_non = y.size - n_tar
    # Standardised inputs condition the solver; the map is converted back below (exactly).
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    constant = [names[j] for j in range(len(names)) if scale[j] == 0.0]
    if constant:
        raise InputError(f"cannot calibrate: {', '.join(constant)} is the same for every trial")
    z = (x - mean) / scale
    # The targets together weigh `prior`, the non-targets 1 - prior; scaled so the weights sum to n.
    weight = np.where(y, prior / n_tar, (1.0 - prior) / n_non) * y.size
    lr = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000)
    lr.fit(z, y.astype(np.int64), sample_weight=weight)
    w = lr.coef_[0] / scale
    offset = float(lr.intercept_[0] - np.dot(w, mean)) - math.log(prior / (1.0 - prior))
    cal = Calibration(offset=offset, weights={n: float(v) for n, v in zip(names, w)}, prior=prior,
                      trials=int(y.size), targets=n_tar, nontargets=n_non, quality=quality_spec, source=source)
    cal.training = calibrated_summary(apply_calibration(cal, s, quality), y).to_dict()
    return cal


def apply_calibration(cal: Calibration, scores: Any, quality: np.ndarray | None = None) -> np.ndarray:
    """LLRs (float64 [n]) for raw scores, plus the quality inputs when `cal` uses them."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    llr = cal.offset + cal.weights["score"] * s
    if cal.quality is None:
        if quality is not None:
            raise UsageError("this calibration uses no quality measure; none should be given")
        return llr
    if quality is None:
        raise UsageError(f"this calibration needs the {cal.quality.measure} quality measure "
                         f"(durations from --features or --durations)")
    q = np.asarray(quality, dtype=np.float64)
    names = cal.quality.features
    if q.shape != (s.size, len(names)):
        raise ValueError(f"quality inputs have shape {q.shape}, expected {(s.size, len(names))}")
    return llr + q @ np.array([cal.weights[n] for n in names])


def save_calibration(cal: Calibration, path: str | Path) -> None:
    """The calibration as JSON, written atomically."""
    from dasv_cli.io.atomic import write_text_atomic

    text = json.dumps(cal.to_dict(), indent=2) + "\n"
    write_text_atomic(path, "calibration", lambda fh: fh.write(text))


def load_calibration(path: str | Path) -> Calibration:
    """A calibration JSON written by `dasv calibrate`; anything else is one InputError."""
    from dasv_cli.io.paths import require_file

    p = require_file(path, "a calibration JSON file", "no such calibration file")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{p}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        line = f":{exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise InputError(f"{p}{line}: not a calibration JSON file ({exc.__class__.__name__})") from None
    return Calibration.from_dict(data, str(p))


def check_model(cal: Calibration, cal_name: str, shas: Collection[str], using: str, any_model: bool = False) -> None:
    """Refuse `cal` for scores of a model (content hashes `shas`, named `using`) it was not fitted for,
    unless `any_model`; say so when either side names no model and it cannot be checked."""
    from dasv_cli import progress

    if any_model:
        return
    fitted = cal.fitted_for
    if fitted is None:
        progress.warn(f"{cal_name}: names no model it was fitted for; applied to {using} unchecked")
    elif not shas:
        progress.warn(f"{cal_name}: {using} names no model, so it cannot be checked against the one the "
                      f"calibration was fitted for ({fitted.get('checkpoint', '?')}); applied unchecked")
    elif fitted["checkpoint_sha256"] not in shas:
        raise InputError(f"{cal_name}: fitted on the scores of another model ({fitted.get('checkpoint', '?')}, "
                         f"sha256 {fitted['checkpoint_sha256'][:12]}) than {using}; fit one on this model's "
                         f"scores with `dasv calibrate`, or pass --any-model to apply it anyway")


def calibrate_score_file(path: str | Path, prior: float = DEFAULT_PRIOR, quality: Quality | None = None, *,
                         features: str | Path | None = None, durations: str | Path | None = None,
                         model: str | Path | None = None) -> Calibration:
    """`dasv calibrate`: fit a calibration to a labelled scores TSV (durations as trial_quality reads them),
    tied to `model` when given, else to the model the scores file's header names (if any)."""
    from dasv_cli.io.scores import read_scores

    table = read_scores(path)
    if table.labels is None:
        raise InputError(f"{path}: the scores have no label column (key1 key2 score label): "
                         f"calibration needs to know which trials are targets")
    q = None
    if quality is not None:
        q = trial_quality(quality, table.key1, table.key2, features=features, durations=durations)
        quality = replace(quality, source=str(features if features is not None else durations))
    elif features is not None or durations is not None:
        raise UsageError("--features / --durations are for --quality duration")
    cal = fit_calibration(table.scores, table.labels, prior, q, quality, source=str(path))
    if model is not None:
        from dasv_cli.io.embeddings import model_identity
        from dasv_cli.io.paths import require_file

        cal.fitted_for = model_identity(require_file(model, "a model file"))
    else:
        cal.fitted_for = table.model
    return cal


def calibrate_trials(cal: Calibration, key1: Sequence[str], key2: Sequence[str], scores: Any, *,
                     features: str | Path | None = None, durations: str | Path | None = None) -> np.ndarray:
    """LLRs of scored trials (what `dasv score --calibration` applies); reads durations if `cal` uses them."""
    q = None
    if cal.quality is not None:
        q = trial_quality(cal.quality, key1, key2, features=features, durations=durations)
    elif durations is not None:  # `features` may be the store the scores were embedded from: not an error
        raise UsageError("this calibration uses no quality measure: --durations is not needed")
    return apply_calibration(cal, scores, q)
