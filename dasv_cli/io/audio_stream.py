"""A recording read a span at a time: `open_wave` gives a `WaveReader` whose read(start, stop) returns
samples [start, stop) of what io.audio.read_audio would return, without holding the whole waveform
when the file allows it.

Streamed (read by seeking, one span at a time): files libsndfile opens at the wanted sample rate in a
container and encoding where its seeks are sample-exact (WAV, WAVEX, RF64, W64, AIFF with PCM or
float samples; FLAC). Read whole through read_audio (held in memory, as before): another sample rate
(resampling is done over the whole signal, so that it gives librosa's samples), FFmpeg's formats
(m4a/AAC, mp3, opus, ...), Ogg/Vorbis and other compressed encodings, and any file whose decoded
length disagrees with its header (read_audio then decides, with its own error reasons).

A streamed file is decoded once at opening, to check it (length, NaN/inf samples) and to measure its
level, and again for each span asked for, so it must not change while it is read (AudioError if it
comes up short).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from dasv_cli.io.audio import AudioError, ffmpeg_first, int16_to_float, mix_down, read_audio

SEEKABLE_FORMATS = ("WAV", "WAVEX", "RF64", "W64", "AIFF", "FLAC")
SEEKABLE_SUBTYPES = ("PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE")
SCAN_SAMPLES = 1 << 20  # samples per read while checking a file (4 MB as float32)


class WaveReader(Protocol):
    """A mono float32 waveform at a known rate, read by spans."""

    samples: int  # its length
    mean_square: float  # mean of the squared samples (float64 sum): its level
    silent: bool  # every sample is zero

    def read(self, start: int, stop: int) -> np.ndarray: ...  # float32 samples [start, stop)


class ArrayReader:
    """A waveform already in memory."""

    def __init__(self, wave: np.ndarray) -> None:
        self.wave = np.asarray(wave, dtype=np.float32)
        self.samples = int(self.wave.shape[0])
        self.mean_square = float(np.mean(np.square(self.wave, dtype=np.float64))) if self.samples else 0.0
        self.silent = not np.any(self.wave)

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.wave[start:stop]


class SoundFileReader:
    """A seekable libsndfile file at the wanted rate, opened for each span (no handle is kept)."""

    def __init__(self, path: Path, samples: int, int16: bool) -> None:
        self.path = path
        self.samples = samples
        self.int16 = int16
        total, nonzero, seen = 0.0, False, 0
        import soundfile as sf

        with sf.SoundFile(str(path)) as fh:
            for start in range(0, samples, SCAN_SAMPLES):
                block = self._decode(fh, min(SCAN_SAMPLES, samples - start))
                if not self.int16 and not np.isfinite(block).all():
                    bad = int(block.size - np.count_nonzero(np.isfinite(block)))
                    raise AudioError(path, f"contains NaN or infinite samples ({bad} near sample {start})")
                total += float(np.dot(block.astype(np.float64), block.astype(np.float64)))
                nonzero = nonzero or bool(np.any(block))
                seen += block.shape[0]
                if block.shape[0] == 0:
                    break
        if seen != samples:
            raise _Short()
        self.mean_square = total / samples
        self.silent = not nonzero

    def _decode(self, fh: object, frames: int) -> np.ndarray:
        """The next `frames` samples of an open file, mixed down as io.audio does (fewer at its end)."""
        if self.int16:
            data = int16_to_float(fh.read(frames, dtype="int16", always_2d=True))  # type: ignore[attr-defined]
        else:
            data = fh.read(frames, dtype="float32", always_2d=True)  # type: ignore[attr-defined]
        return np.ascontiguousarray(mix_down(data))

    def read(self, start: int, stop: int) -> np.ndarray:
        import soundfile as sf

        stop = min(stop, self.samples)
        try:
            with sf.SoundFile(str(self.path)) as fh:
                fh.seek(start)
                got = self._decode(fh, stop - start)
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            raise AudioError(self.path, f"could not be read again ({str(exc).splitlines()[0] if str(exc) else exc})")
        if got.shape[0] != stop - start:
            raise AudioError(self.path, "the file changed or was cut short while it was being read")
        return got


class _Short(Exception):
    """The decoded length is not the header's: read the file whole (read_audio decides)."""


def open_wave(path: str | Path, sample_rate: int) -> WaveReader:
    """The file's waveform at `sample_rate`, streamed when its format allows (see the module's note),
    else decoded whole by read_audio; AudioError for anything unusable, as read_audio."""
    p = Path(path)
    if not ffmpeg_first(p):
        import soundfile as sf

        try:
            with sf.SoundFile(str(p)) as fh:
                fits = (fh.samplerate == sample_rate and fh.format in SEEKABLE_FORMATS and fh.seekable()
                        and fh.subtype in SEEKABLE_SUBTYPES and 0 < fh.frames < 2 ** 62)
                samples, int16 = int(fh.frames), fh.subtype == "PCM_16"
        except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError):
            fits = False  # read_audio tries FFmpeg and says why neither could
        if fits:
            try:
                return SoundFileReader(p, samples, int16)
            except _Short:
                pass
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise AudioError(p, f"not readable audio ({str(exc).splitlines()[0] if str(exc) else exc})")
    return ArrayReader(read_audio(p, sample_rate).wave)
