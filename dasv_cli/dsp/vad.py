"""Speech only: Silero VAD (the `silero-vad` package, MIT, its JIT model shipped in the wheel) finds
the speech in a waveform; the rest is dropped before embedding, as WeSpeaker does for long audio.

Only the package's model and its speech-segment logic are used (torch alone: its audio I/O, which
would need torchaudio, is never called). Importing `silero_vad` sets torch to one thread as a side
effect; the caller's thread count is put back.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from dasv_cli.errors import UsageError

VAD_RATES = (8000, 16000)


def _silero() -> Any:
    """The silero_vad module (a one-line error naming the extra when it is not installed)."""
    import torch

    threads = torch.get_num_threads()
    try:
        import silero_vad
    except ImportError:
        raise UsageError("--vad needs the 'vad' extra: pip install 'dasv[vad]' (silero-vad)") from None
    finally:
        torch.set_num_threads(threads)
    return silero_vad


@lru_cache(maxsize=1)
def _model() -> Any:
    return _silero().load_silero_vad()  # the packaged .jit, through importlib.resources


def speech_segments(wave: np.ndarray, rate: int) -> list[tuple[int, int]]:
    """[(start, stop)] sample ranges of speech in a mono float waveform at `rate` (8 or 16 kHz)."""
    import torch

    if rate not in VAD_RATES:
        raise UsageError(f"--vad works at 8 or 16 kHz; the model's features are at {rate} Hz")
    silero, model = _silero(), _model()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 32 ms windows one after another: more threads only add overhead
    try:
        with torch.inference_mode():
            found = silero.get_speech_timestamps(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)),
                                                 model, sampling_rate=rate)
    finally:
        torch.set_num_threads(threads)
    return [(int(s["start"]), int(s["end"])) for s in found]


def speech_only(wave: np.ndarray, rate: int) -> tuple[np.ndarray, float]:
    """(the speech of `wave` joined end to end, its share of the samples); an empty wave when none."""
    segments = speech_segments(wave, rate)
    if not segments:
        return wave[:0], 0.0
    speech = np.concatenate([wave[a:b] for a, b in segments])
    return speech, speech.shape[0] / max(wave.shape[0], 1)
