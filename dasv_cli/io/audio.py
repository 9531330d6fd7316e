"""Audio files -> float32 mono waveforms at the model's rate.

Anything libsndfile reads (WAV, FLAC, OGG/Vorbis, AIFF, ...). Multi-channel audio is mixed down
(mean of the channels); another sample rate is resampled with soxr "HQ" (librosa's default
resampler, so `librosa.load(path, sr=16000)` gives the same samples). Problems a user can cause
(missing, unreadable, corrupt, empty files, NaN/inf samples) raise `AudioError` with a short reason,
which `dasv features` writes to failed.tsv.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dasv_cli.errors import InputError

DEFAULT_SAMPLE_RATE = 16000


class AudioError(InputError):
    """An audio file that cannot be used; `reason` is the short text for failed.tsv."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass
class Audio:
    """A decoded file: the waveform at `sample_rate`, and what the file itself had."""

    wave: np.ndarray  # float32 [samples], mono, nominally in [-1, 1)
    sample_rate: int
    source_rate: int
    channels: int

    @property
    def resampled(self) -> bool:
        return self.source_rate != self.sample_rate

    @property
    def seconds(self) -> float:
        return len(self.wave) / self.sample_rate


_INT16_SUBTYPES = ("PCM_16",)


def read_audio(path: str | Path, sample_rate: int = DEFAULT_SAMPLE_RATE) -> Audio:
    """Decode `path` to float32 mono at `sample_rate`; AudioError for anything unusable."""
    import soundfile as sf

    p = Path(path)
    try:
        with sf.SoundFile(str(p)) as fh:
            rate = fh.samplerate
            if fh.subtype in _INT16_SUBTYPES:
                # 16-bit sources (most speech corpora): decoding to int16 skips libsndfile's float
                # conversion; scaling by 2**-15 is exact and gives the very same float32 samples.
                data = fh.read(dtype="int16", always_2d=False).astype(np.float32) * np.float32(1.0 / 32768.0)
            else:
                data = fh.read(dtype="float32", always_2d=False)
    except FileNotFoundError:
        raise AudioError(p, "no such file") from None
    except IsADirectoryError:
        raise AudioError(p, "is a directory, not an audio file") from None
    except PermissionError as exc:
        raise AudioError(p, f"cannot read ({exc.strerror or 'permission denied'})") from None
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError) as exc:
        if not p.exists():
            raise AudioError(p, "no such file") from None
        if p.is_dir():
            raise AudioError(p, "is a directory, not an audio file") from None
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        detail = detail.replace(f"Error opening {str(p)!r}: ", "").strip()
        raise AudioError(p, f"not readable audio ({detail})") from None
    channels = 1 if data.ndim == 1 else int(data.shape[1])
    if data.ndim == 2:
        data = data.mean(axis=1, dtype=np.float32) if channels > 1 else data[:, 0]
    if data.size == 0:
        raise AudioError(p, "empty audio (0 samples)")
    if not np.isfinite(data).all():
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise AudioError(p, f"contains NaN or infinite samples ({bad} of {data.size})")
    wave = np.ascontiguousarray(data, dtype=np.float32)
    if rate != sample_rate:
        wave = resample(wave, int(rate), sample_rate)
    return Audio(wave=wave, sample_rate=sample_rate, source_rate=int(rate), channels=channels)


def load_audio(path: str | Path, sample_rate: int = DEFAULT_SAMPLE_RATE) -> np.ndarray:
    """float32 mono waveform of `path` at `sample_rate` (mixed down and resampled when needed)."""
    return read_audio(path, sample_rate).wave


def resample(wave: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling (soxr HQ, as librosa.resample's default); float32 in, float32 out."""
    if source_rate == target_rate:
        return np.asarray(wave, dtype=np.float32)
    if source_rate <= 0:
        raise ValueError(f"invalid sample rate {source_rate}")
    try:
        import soxr
    except ImportError:  # pragma: no cover - soxr comes with librosa
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(source_rate, target_rate)
        out = resample_poly(np.asarray(wave, dtype=np.float64), target_rate // g, source_rate // g)
        return out.astype(np.float32)
    return np.ascontiguousarray(soxr.resample(np.asarray(wave, dtype=np.float32), source_rate, target_rate,
                                              quality="HQ"), dtype=np.float32)
