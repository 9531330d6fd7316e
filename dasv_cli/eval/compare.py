"""`dasv compare`: embed a few audio files with a checkpoint or an exported ONNX model, and score pairs of
them (cosine; with a calibration also the LLR and the Bayes decision at a prior).

Audio is featurised exactly as `dasv embed --audio` does: through eval.audio_embed.iter_audio_embeddings,
with a checkpoint or an exported ONNX model (eval.embed.open_onnx_extractor: its graph normalises the
raw log-mel itself). Each distinct file is embedded once, however many pairs name it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Optional, Sequence

import numpy as np

from dasv_cli.errors import InputError, UsageError
from dasv_cli.io.lists import split_fields

if TYPE_CHECKING:  # pragma: no cover
    from dasv_cli.eval.calibration import Calibration

DEFAULT_PRIOR = 0.01  # the target prior of the decision; actual DCF is reported at 0.01 and 0.05


@dataclass(frozen=True)
class Pair:
    """Two audio paths to compare; `where` is 'FILE:LINE' when they come from a pairs file."""

    a: str
    b: str
    where: Optional[str] = None


class AudioEmbedder:
    """One loaded extractor (checkpoint or .onnx) turning audio paths into embeddings, each file once."""

    def __init__(self, model_path: str | Path, device: str = "auto", chunk_seconds: float | None = None,
                 vad: bool = False) -> None:
        from dasv_cli.eval.chunked import DEFAULT_CHUNK_SECONDS

        self.model_path = Path(model_path)
        self.chunk_seconds = DEFAULT_CHUNK_SECONDS if chunk_seconds is None else chunk_seconds
        self.vad = vad
        self.speech: dict[str, float] = {}  # with vad: each embedded file's share of speech
        self.onnx = self.model_path.suffix.lower() == ".onnx"
        self.embedded = 0  # files featurised and embedded so far (each distinct path once)
        from dasv_cli.eval.embed import checkpoint_norm, checkpoint_recipe, load_extractor, open_onnx_extractor

        if self.onnx:  # the graph normalises; it is fed raw log-mel (norm "none")
            self.device = "cpu"
            self.model, ckpt, self.norm = open_onnx_extractor(self.model_path)
            self.source_sha256 = ckpt.get("source_sha256")
        else:
            from dasv_cli.devices import resolve_device

            self.device = resolve_device(device)
            self.model, ckpt = load_extractor(self.model_path, self.device)
            self.norm = checkpoint_norm(ckpt)
        self.recipe = checkpoint_recipe(ckpt)

    source_sha256: Optional[str] = None  # an ONNX model's: the checkpoint it was exported from

    def model_shas(self) -> set[str]:
        """The content hashes that name this model: its file's, and an ONNX model's source checkpoint's."""
        from dasv_cli.io.embeddings import file_sha256

        return {file_sha256(self.model_path)} | ({self.source_sha256} if self.source_sha256 else set())

    def embed_paths(self, paths: Sequence[str], where: Optional[dict[str, str]] = None) -> dict[str, np.ndarray]:
        """{path: float32 [E]} for each distinct path; an unusable file is one InputError naming it
        (and `where[path]`, the pairs-file line that first named it)."""
        unique = list(dict.fromkeys(str(p) for p in paths))
        where = where or {}
        for p in unique:
            if not Path(p).is_file():
                raise InputError(_named(p, where, "no such audio file" if not Path(p).exists() else "not a file"))
        out = self._embed(unique, where)
        self.embedded += len(unique)
        return out

    def duration(self, path: str) -> float:
        """Seconds of audio in a file (for a calibration fitted with --quality duration)."""
        from dasv_cli.io.audio import read_audio

        return read_audio(path).seconds

    def _embed(self, paths: list[str], where: dict[str, str]) -> dict[str, np.ndarray]:
        from dasv_cli.eval.audio_embed import iter_audio_embeddings
        from dasv_cli.eval.embed import AudioFailure
        from dasv_cli.io.lists import AudioEntry

        entries = [AudioEntry(key=p, path=Path(p), line=i + 1) for i, p in enumerate(paths)]
        failures: list[AudioFailure] = []
        out: dict[str, np.ndarray] = {}
        for keys, vectors in iter_audio_embeddings(self.model, entries, self.recipe, self.norm, self.device,
                                                   progress=False, failures=failures,
                                                   chunk_seconds=self.chunk_seconds, vad=self.vad,
                                                   speech=self.speech):
            out.update(zip(keys, vectors))
        if failures:
            raise InputError(_named(failures[0].path, where, failures[0].reason))
        return out


def _named(path: str, where: dict[str, str], reason: str) -> str:
    at = f" (named at {where[path]})" if path in where else ""
    return f"{path}: {reason}{at}"


def read_pairs(src: str | Path, stream: Optional[IO[str]] = None) -> list[Pair]:
    """`pathA pathB` lines (TAB-separated when a path holds spaces); '#' comments and blank lines skipped."""
    name = "<stdin>" if str(src) == "-" else str(src)
    if stream is None and str(src) != "-":
        from dasv_cli.io.paths import require_file

        text = require_file(src, "a pairs file", "no such pairs file").read_text(encoding="utf-8")
    else:
        import sys

        text = (stream or sys.stdin).read()
    pairs = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = split_fields(line)
        if len(fields) != 2 or not all(fields):
            raise InputError(f"{name}:{number}: expected 'pathA pathB' (TAB between them when a path has spaces), "
                             f"got {len(fields)} field(s)")
        pairs.append(Pair(fields[0], fields[1], f"{name}:{number}"))
    if not pairs:
        raise InputError(f"{name}: no pairs to compare")
    return pairs


@dataclass
class Comparison:
    """One scored pair: the cosine, and with a calibration the LLR and the decision."""

    pair: Pair
    cosine: float
    llr: Optional[float] = None
    same: Optional[bool] = None

    def to_dict(self) -> dict[str, object]:
        return {"a": self.pair.a, "b": self.pair.b, "cosine": self.cosine, "llr": self.llr,
                "decision": None if self.same is None else ("same" if self.same else "different")}

    def line(self) -> str:
        fields = [self.pair.a, self.pair.b, f"{self.cosine:.6f}"]
        if self.llr is not None:
            fields += [f"{self.llr:.6f}", "same" if self.same else "different"]
        return "\t".join(fields)


def compare_pairs(embedder: AudioEmbedder, pairs: Sequence[Pair], calibration: Optional[Path] = None,
                  prior: float = DEFAULT_PRIOR, any_model: bool = False) -> list[Comparison]:
    """Cosine of each pair (every file embedded once); with `calibration` (fitted for this model, unless
    `any_model`), LLRs decided at the Bayes threshold -log(prior / (1 - prior)) (durations of a
    duration calibration from the audio itself)."""
    from dasv_cli.eval.cosine import l2_normalise

    if not 0.0 < prior < 1.0:
        raise UsageError(f"--prior must lie strictly between 0 and 1, got {prior}")
    cal = None
    if calibration is not None:
        from dasv_cli.eval.calibration import check_model, load_calibration

        cal = load_calibration(calibration)
        check_model(cal, str(calibration), embedder.model_shas(), str(embedder.model_path), any_model)
    where: dict[str, str] = {}
    for pr in pairs:
        if pr.where is not None:
            where.setdefault(pr.a, pr.where)
            where.setdefault(pr.b, pr.where)
    table = embedder.embed_paths([p for pr in pairs for p in (pr.a, pr.b)], where)
    a = l2_normalise(np.stack([table[pr.a] for pr in pairs]))
    b = l2_normalise(np.stack([table[pr.b] for pr in pairs]))
    scores = np.sum(a.astype(np.float64) * b, axis=1)
    results = [Comparison(pr, float(s)) for pr, s in zip(pairs, scores)]
    if cal is not None:
        quality = None
        if cal.quality is not None:
            from dasv_cli.eval.quality import duration_quality

            durs = {p: embedder.duration(p) for p in table}
            quality = duration_quality([pr.a for pr in pairs], [pr.b for pr in pairs], durs,
                                       cal.quality.max_duration, "the audio")
        for r, (v, same) in zip(results, decide(cal, scores, prior, quality)):
            r.llr, r.same = v, same
    return results


def decide(cal: "Calibration", scores: Sequence[float] | np.ndarray, prior: float,
           quality: Optional[np.ndarray] = None) -> list[tuple[float, bool]]:
    """(LLR, same?) per cosine: the calibrated score, accepted where it reaches `decision_threshold(prior)`."""
    from dasv_cli.eval.calibration import apply_calibration

    t = decision_threshold(prior)
    return [(float(v), bool(v >= t)) for v in apply_calibration(cal, np.asarray(scores, np.float64), quality)]


def decision_threshold(prior: float) -> float:
    """The Bayes threshold on LLRs at target prior `prior` (C_miss = C_fa = 1): -log(prior / (1 - prior))."""
    from dasv_cli.eval.llr_metrics import bayes_threshold

    return bayes_threshold(prior)


def decision_note(prior: float) -> str:
    """What the same/different column means, for people (stderr)."""
    return (f"decision: 'same' where LLR >= {decision_threshold(prior):.3f}, the Bayes threshold at target prior "
            f"{prior:g} (-log(P/(1-P)); --prior P moves it)")
