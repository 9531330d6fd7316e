"""The inputs of a training run, read and cross-checked before any training.

Labels against the feature store (every key present, no empty utterance, enough for one batch),
validation trials against their store (both kinds of trial, every key present, the same feature
recipe as training). Every problem is one InputError/UsageError line naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dasv_cli.errors import InputError, UsageError
from dasv_cli.io.plain import plain
from dasv_cli.train.augmented import with_copies
from dasv_cli.train.config import TrainConfig


@dataclass
class TrainData:
    """Everything about the inputs that training needs, checked up front."""

    keys: list[str]
    labels: np.ndarray
    speakers: list[str] | None
    num_speakers: int
    lengths: np.ndarray
    recipe: dict[str, Any]
    n_mels: int
    trials: Any = None  # dasv_cli.io.lists.Trials or None
    valid_store: str | None = None
    store: Any = None  # the training FeatureStore: its index built once per run, handles closed
    rows: np.ndarray | None = None  # int64 store row of each key
    valid: Any = None  # the validation FeatureStore (the training one when they are the same path)
    sources: Any = None  # augment.online.SourceStores with --online-augment (noise, music, RIR pools)


def _first(items: list[str], n: int = 3) -> str:
    shown = ", ".join(items[:n])
    return shown + (", ..." if len(items) > n else "")


def open_store(path: str):
    """The FeatureStore at `path`, with a hint when there is none."""
    from dasv_cli.io.store.reader import FeatureStore

    if not Path(path).exists():
        raise InputError(f"{path}: no such feature store (make one with `dasv features`)")
    return FeatureStore(path)


def prepare_data(cfg: TrainConfig, world: int = 1) -> TrainData:
    """Read and cross-check labels, features and trials; every problem is a one-line InputError."""
    from dasv_cli.io.lists import read_train_labels

    cfg.check_paths()
    labels = read_train_labels(cfg.train_labels)
    if labels.num_classes < 2:
        raise InputError(f"{cfg.train_labels}: only {labels.num_classes} speaker; training needs at least 2")
    store = open_store(cfg.features)
    try:
        if len(store) == 0:
            raise InputError(f"{cfg.features}: the feature store is empty")
        labels = with_copies(labels, store.keys(), cfg.features) if cfg.augmented else labels
        rows = store.rows(labels.keys)
        if (rows < 0).any():
            missing = [labels.keys[i] for i in np.flatnonzero(rows < 0)[:4]]
            raise InputError(
                f"{cfg.train_labels}: {int((rows < 0).sum())} of {len(labels.keys)} keys are not in the feature store "
                f"{cfg.features} (first: {_first(missing)})"
            )
        lengths = store.row_lengths(rows)
        empty = [labels.keys[i] for i in np.flatnonzero(lengths <= 0)]
        if empty:
            raise InputError(f"{cfg.features}: {len(empty)} training utterances have no frames (first: {_first(empty)})")
        recipe = plain(dict(store.recipe))
        n_mels = int(recipe.get("n_mels", 80))
        if cfg.online_augment and not store.has_audio:
            raise InputError(f"{cfg.features}: holds no waveforms, which --online-augment reads; recompute the "
                             f"store with `dasv features LIST --keep-audio -o DIR`")
    finally:
        store.close()
    sources = None
    if cfg.online_augment:
        from dasv_cli.train.online import open_sources

        sources = open_sources(cfg, recipe)
    if len(labels.keys) < cfg.batch_size * world:
        raise UsageError(
            f"{cfg.train_labels}: {len(labels.keys)} training utterances cannot fill one batch of "
            f"{cfg.batch_size} x {world} process(es); lower --batch-size"
        )
    trials, valid_store, valid = _validation_inputs(cfg, recipe, store) if cfg.has_validation else (None, None, None)
    return TrainData(keys=labels.keys, labels=labels.labels, speakers=labels.names,
                     num_speakers=labels.num_classes, lengths=lengths, recipe=recipe, n_mels=n_mels,
                     trials=trials, valid_store=valid_store, store=store, rows=rows, valid=valid, sources=sources)


def _same_dir(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _validation_inputs(cfg: TrainConfig, recipe: dict[str, Any], train_store: Any) -> tuple[Any, str, Any]:
    """The validation trials and their store, checked against each other and the training recipe."""
    from dasv_cli.io.lists import read_trial_pair, read_trials
    from dasv_cli.io.store.layout import check_recipe

    if cfg.valid_trials:
        trials = read_trials(cfg.valid_trials)
        trial_name = cfg.valid_trials
    else:
        trials = read_trial_pair(cfg.valid_clients, cfg.valid_impostors)
        trial_name = f"{cfg.valid_clients} / {cfg.valid_impostors}"
    if trials.labels.min() == trials.labels.max():
        raise InputError(f"{trial_name}: validation needs both same- and different-speaker trials")
    valid_store = cfg.valid_features or cfg.features
    vstore = train_store if _same_dir(valid_store, cfg.features) else open_store(valid_store)
    try:
        check_recipe(valid_store, plain(dict(vstore.recipe)), recipe, f"the training store {cfg.features}")
        unique = list(trials.unique_keys())
        absent_rows = np.flatnonzero(vstore.rows(unique) < 0)
        if absent_rows.size:
            absent = [unique[i] for i in absent_rows[:4]]
            raise InputError(
                f"{trial_name}: {absent_rows.size} of {len(unique)} trial keys are not in the feature store "
                f"{valid_store} (first: {_first(absent)})"
            )
    finally:
        vstore.close()
    return trials, valid_store, vstore


__all__ = ["TrainData", "prepare_data", "open_store"]
