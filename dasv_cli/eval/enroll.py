"""Enrolled speakers: one vector per name (the mean of its recordings' L2-normalised embeddings), kept
as an embedding table (io.embeddings: keys are the names) whose attrs name the model that made them, so
a test recording is only ever ranked against speakers embedded by the same model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from dasv_cli.errors import InputError, UsageError
from dasv_cli.eval.compare import DEFAULT_PRIOR, AudioEmbedder, decide
from dasv_cli.eval.cosine import l2_normalise
from dasv_cli.io import embeddings as tables

SPEAKERS_CONTENT = "enrolled speakers"


@dataclass
class Enrolled:
    name: str
    recordings: int
    replaced: bool  # the name was enrolled before and its vector is now the new one
    speakers: int  # names in the table after this enrolment


def _model_attrs(embedder: AudioEmbedder) -> dict[str, str]:
    return {"content": SPEAKERS_CONTENT, **tables.model_identity(embedder.model_path)}


def read_speakers(path: str | Path, embedder: AudioEmbedder) -> tables.Embeddings:
    """The speakers table at `path`; refused when it is not one, or when another model made it."""
    table = tables.read_embeddings(path)
    if table.attrs.get("content") != SPEAKERS_CONTENT:
        raise InputError(f"{path}: not an enrolled-speakers table (write one with `dasv enroll`)")
    want = _model_attrs(embedder)
    if table.attrs.get("checkpoint_sha256") != want["checkpoint_sha256"]:
        raise InputError(f"{path}: speakers enrolled with another model ({table.attrs.get('checkpoint', '?')}), "
                         f"not {embedder.model_path}; enrol them again with this one")
    return table


def enroll(embedder: AudioEmbedder, name: str, files: Sequence[str], output: str | Path) -> Enrolled:
    """Add (or replace) speaker `name` in the table at `output` (created when missing); the others are kept."""
    name = name.strip()
    if not name or any(c.isspace() for c in name):
        raise UsageError(f"speaker name {name!r} must be one word (no spaces or tabs)")
    if not files:
        raise UsageError("give at least one recording to enrol")
    out = Path(output)
    table = read_speakers(out, embedder) if out.exists() else tables.empty()
    got = embedder.embed_paths(list(files))
    vector = l2_normalise(np.stack([got[str(f)] for f in dict.fromkeys(map(str, files))])).mean(axis=0)
    replaced = name in table
    keys = [k for k in table.keys if k != name]
    rest = table.vectors[[table.index[k] for k in keys]] if keys else np.zeros((0, vector.size), np.float32)
    if keys and rest.shape[1] != vector.size:
        raise InputError(f"{out}: holds {rest.shape[1]}-dimensional speakers, the model makes {vector.size}")
    new = tables.Embeddings(keys + [name], np.concatenate([rest, vector[None]]).astype(np.float32),
                            dict(table.attrs))
    tables.write_embeddings(out, new, _model_attrs(embedder))
    return Enrolled(name, len(got), replaced, len(new))


def rank_speakers(embedder: AudioEmbedder, test: str, speakers: str | Path) -> list[tuple[str, float]]:
    """(name, cosine) of every enrolled speaker against recording `test`, best first."""
    table = read_speakers(speakers, embedder)
    if not len(table):
        raise InputError(f"{speakers}: no speakers enrolled")
    vec = l2_normalise(embedder.embed_paths([test])[str(test)][None].astype(np.float64))[0]
    scores = l2_normalise(table.vectors.astype(np.float64)) @ vec
    order = np.argsort(-scores, kind="stable")
    return [(table.keys[i], float(scores[i])) for i in order]


def rank_calibrated(embedder: AudioEmbedder, test: str, speakers: str | Path, calibration: Path,
                    prior: float = DEFAULT_PRIOR) -> list[tuple[str, float, float, bool]]:
    """(name, cosine, LLR, same?) of every enrolled speaker against `test`, best first (`compare
    TEST --speakers --calibration`). A calibration fitted with durations is refused: an enrolled
    speaker is a mean of recordings and has no one duration."""
    from dasv_cli.eval.calibration import load_calibration

    cal = load_calibration(calibration)
    if cal.quality is not None:
        raise UsageError(f"{calibration}: fitted with --quality {cal.quality.measure}, which an enrolled speaker "
                         "(a mean of recordings) has no value of; use a calibration fitted without --quality")
    ranked = rank_speakers(embedder, test, speakers)
    decided = decide(cal, [score for _, score in ranked], prior)
    return [(name, score, llr, same) for (name, score), (llr, same) in zip(ranked, decided)]
