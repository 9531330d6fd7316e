"""Embeddings of audio files, featurised on the fly with a checkpoint's recipe (`dasv embed --audio`,
compare, enroll): one file in memory at a time, each embedded whole through eval.chunked, with Silero
VAD first when asked (dsp.vad)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from dasv_cli.eval.chunked import DEFAULT_CHUNK_SECONDS
from dasv_cli.eval.embed import AudioFailure, logmel_config, Reporter

if TYPE_CHECKING:  # pragma: no cover
    from dasv_cli.io.lists import AudioEntry

# At or below this RMS level (dB full scale) an input is taken for silence: -60 dBFS is about the
# noise floor of a quiet 16-bit recording with nobody speaking; speech sits near -20 to -30 dBFS.
SILENCE_DB = -60.0


def iter_audio_embeddings(model: Any, entries: Sequence["AudioEntry"], recipe: dict[str, Any] | None,
                          norm: str = "cmn", device: str = "cpu", progress: bool = True,
                          failures: list[AudioFailure] | None = None,
                          chunk_seconds: float = DEFAULT_CHUNK_SECONDS, vad: bool = False,
                          speech: dict[str, float] | None = None,
                          check: Callable[[], None] | None = None) -> Iterator[tuple[list[str], np.ndarray]]:
    """Like iter_store_embeddings, but featurising audio files on the fly with the `dasv features`
    recipe (`recipe`: the checkpoint's; the paper's when None), one file in memory at a time, each
    embedded whole through eval.chunked (`chunk_seconds` of audio through the front-end at a time).
    With `vad`, only what Silero VAD calls speech is embedded, and `speech[key]` gets its share of the
    file. Unusable files (unreadable, digital silence, no speech) go to `failures`; `check` is called
    before each file."""
    from dasv_cli.eval.chunked import embed_features, parts_of
    from dasv_cli.io.audio import AudioError
    from dasv_cli.progress import warn

    cfg = logmel_config(recipe)
    chunk = chunk_of(chunk_seconds, recipe)
    parts, norm = parts_of(model, device, norm)
    failures = failures if failures is not None else []
    short: list[str] = []
    silent: list[str] = []
    with Reporter(len(entries), progress, "embedding audio") as rep:
        for entry in entries:
            if check is not None:
                check()
            try:
                feats, ratio, level = _audio_features(str(entry.path), cfg, norm, chunk, vad)
            except AudioError as exc:
                failures.append(AudioFailure(str(entry.path), exc.reason))
                rep.advance(1)
                continue
            except ValueError as exc:  # shorter than one analysis window, silence, no speech
                failures.append(AudioFailure(str(entry.path), str(exc)))
                rep.advance(1)
                continue
            if level <= SILENCE_DB:
                silent.append(f"{entry.path} ({level:.0f} dBFS)")
            if ratio is not None and speech is not None:
                speech[entry.key] = ratio
            if feats.total < parts.min_frames:
                short.append(entry.key)
            vector = embed_features(parts, feats, chunk, str(entry.path))
            rep.advance(1)
            yield [entry.key], vector[None]
    if short:
        shown = ", ".join(short[:5]) + (", ..." if len(short) > 5 else "")
        warn(f"{len(short)} utterance(s) shorter than {parts.min_frames} frames were repeated to reach it: {shown}")
    if silent:
        shown = ", ".join(silent[:5]) + (", ..." if len(silent) > 5 else "")
        warn(f"{len(silent)} input(s) (near) silent, their embeddings describe no speaker: {shown}")


def _audio_features(path: str, cfg: Any, norm: str, chunk: int, vad: bool) -> tuple[Any, float | None, float]:
    """(eval.chunked.Features of the file, speech share with `vad` else None, level in dBFS). The file
    is read a span at a time where io.audio_stream can (WAV, FLAC at the model's rate), so neither its
    waveform nor its log-mel is held whole; with `vad` its waveform is (Silero looks at all of it).
    ValueError for digital silence, no speech, or too short audio; a level at or below SILENCE_DB is
    warned about by the caller."""
    from dasv_cli.eval.chunked import Features
    from dasv_cli.io.audio_stream import ArrayReader, open_wave
    from dasv_cli.progress import log

    reader = open_wave(path, cfg.sample_rate)
    if reader.silent:
        raise ValueError("digital silence: every sample is zero (no speaker to embed)")
    level = db_of_mean_square(reader.mean_square)
    ratio = None
    if vad:
        from dasv_cli.dsp.vad import speech_only

        wave = reader.read(0, reader.samples)
        total = wave.shape[0] / cfg.sample_rate
        wave, ratio = speech_only(wave, cfg.sample_rate)
        log(f"{path}: speech {100 * ratio:.1f}% ({wave.shape[0] / cfg.sample_rate:.1f} s of {total:.1f} s)",
            force=True)
        if wave.shape[0] == 0:
            raise ValueError("no speech found by --vad (silence or noise only); nothing to embed")
        reader = ArrayReader(wave)
    return Features.of_reader(reader, cfg, norm, chunk), ratio, level


def db_of_mean_square(mean_square: float) -> float:
    """RMS level in dB full scale (1.0 = 0 dB) from the mean of the squared samples (a stream
    accumulates it a block at a time); -300 for digital silence rather than -inf."""
    return 20.0 * np.log10(max(float(np.sqrt(mean_square)), 1e-15))


def chunk_of(seconds: float, recipe: dict[str, Any] | None) -> int:
    """Frames in `seconds` at the hop of a checkpoint's recipe (UsageError unless positive)."""
    from dasv_cli.errors import UsageError
    from dasv_cli.eval.chunked import chunk_frames

    try:
        return chunk_frames(seconds, logmel_config(recipe))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
