"""Validation: the EER and minDCFs of a model on a trial list, each unique utterance embedded once.

Two callers: training validates its model in memory every N updates (`evaluate_trials`), and
`dasv validate` validates checkpoints from disk, one file or a directory of them ranked by EER
(`validate_checkpoints`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from dasv_cli.devices import resolve_device
from dasv_cli.errors import DasvError, InputError
from dasv_cli.eval import embed as embedding
from dasv_cli.eval.metrics import Metrics, compute_metrics
from dasv_cli.eval.scoring import cosine_scores, score_table
from dasv_cli.eval.trials import describe_missing
from dasv_cli.interrupts import InterruptFlag
from dasv_cli.io.lists import Trials

CHECKPOINT_SUFFIXES = (".pt", ".chkpt", ".pth")


def evaluate_trials(model: Any, store: Any, trials: Trials, norm: str = "cmn", device: str = "cpu",
                    progress: bool = False) -> Metrics:
    """EER and minDCFs of `model` on `trials`, each unique utterance of the store embedded once.

    This is what training validation calls: the model runs in eval mode and is left in the mode it
    was found in.
    """
    keys = trials.unique_keys()
    absent = [k for k in keys if k not in store]
    if absent:
        raise InputError(describe_missing(absent, len(keys), "the feature store", trials=trials))
    vectors = embedding.embed_store(model, store, keys, norm=norm, device=device, progress=progress)
    return compute_metrics(cosine_scores(keys, vectors, trials), trials.labels)


@dataclass
class Validation:
    """`dasv validate`'s outcome: one row per validated checkpoint (best EER first) and the failures."""

    results: list[dict[str, Any]]
    failed: list[tuple[Path, str]] = field(default_factory=list)


def checkpoint_candidates(model: Path) -> list[Path]:
    """`model` itself, or every checkpoint in the directory `model` and below it (sorted)."""
    if not model.is_dir():
        return [model]
    # Recursive, so `runs/` ranks the checkpoints of every run in it (runs/<name>/best.pt ...).
    candidates = sorted(p for p in model.rglob("*") if p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES
                        and not p.name.startswith("."))
    if not candidates:
        raise InputError(f"{model}: no checkpoints (*.pt, *.chkpt) in this directory or below it")
    return candidates


def validate_checkpoints(model: Path, features: Path, trials: Trials, *, device: str = "auto",
                         skip_missing: bool = False, progress: bool = True) -> Validation:
    """Validate one checkpoint, or rank a directory of them; a directory skips (and lists) the
    checkpoints that cannot be validated, a single checkpoint's error is raised.

    Ctrl-C is taken as a request checked between batches (interrupts.py: a KeyboardInterrupt raised
    inside a finaliser would be printed and lost, and the run would go on to exit 0)."""
    with InterruptFlag() as interrupt:
        return _validate(model, features, trials, device, skip_missing, progress, interrupt.check)


def _validate(model: Path, features: Path, trials: Trials, device: str, skip_missing: bool, progress: bool,
              check: Callable[[], None]) -> Validation:
    from dasv_cli.progress import log, warn

    candidates = checkpoint_candidates(model)
    dev = resolve_device(device)
    results: list[dict[str, Any]] = []
    failed: list[tuple[Path, str]] = []
    for path in candidates:
        check()
        try:
            loaded = embedding.load_extractor(path, dev)
            table = embedding.embed_trials_table(path, features, trials, device=dev, skip_missing=skip_missing,
                                                 progress=progress, model_and_ckpt=loaded, check=check)
            scored = score_table(table, trials, skip_missing=skip_missing,
                                 table_name=f"the feature store {features}")
            metrics = compute_metrics(scored.scores, scored.trials.labels)
        except DasvError as exc:
            if len(candidates) == 1:
                raise
            warn(f"{path}: skipped: {exc.message}")
            failed.append((path, exc.message))
            continue
        row = metrics.to_dict()
        row.update({"checkpoint": str(path), "step": int(loaded[1].get("step") or 0), "skipped": scored.skipped})
        results.append(row)
        log(f"{path}: {metrics.summary()}" + (f"; skipped {scored.skipped} trial(s)" if scored.skipped else ""),
            force=True)
    check()  # a Ctrl-C after the last batch still ends the run as interrupted
    if not results:
        raise InputError(f"{model}: none of the {len(candidates)} checkpoints could be validated")
    results.sort(key=lambda r: (r["eer"], r["min_dcf_p01"]))
    for rank, row in enumerate(results, start=1):
        row["rank"] = rank
    return Validation(results, failed)


def ranking_tsv(results: list[dict[str, Any]]) -> str:
    """The ranking as TSV with a header: rank, checkpoint, eer, minDCFs, EER threshold, trials."""
    lines = ["rank\tcheckpoint\teer\tmin_dcf_p01\tmin_dcf_p05\teer_threshold\ttrials\n"]
    for r in results:
        lines.append(f"{r['rank']}\t{r['checkpoint']}\t{r['eer']:.4f}\t{r['min_dcf_p01']:.4f}\t"
                     f"{r['min_dcf_p05']:.4f}\t{r['eer_threshold']:.6f}\t{r['trials']}\n")
    return "".join(lines)
