"""Audio files -> float32 mono waveforms at the model's rate.

Two decoders behind one `read_audio`: libsndfile (soundfile) for the formats it reads natively and
fast (WAV, FLAC, OGG/Vorbis, AIFF, ...), FFmpeg through PyAV for the rest (m4a/AAC as VoxCeleb2 ships
it, mp3, opus, the audio of video containers). The file's extension picks the first decoder; when it
cannot read the file the other one is tried, so a misnamed file or one with an unknown extension (or
none) is still read when either can. Multi-channel audio is mixed down (mean of the channels);
another sample rate is resampled with soxr "HQ" (librosa's default resampler, so
`librosa.load(path, sr=16000)` gives the same samples). Problems a user can cause (missing,
unreadable, corrupt, empty files, NaN/inf samples) raise `AudioError` with a short reason, which
`dasv features` writes to failed.tsv.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dasv_cli.errors import InputError
from dasv_cli.io.flac import decode_flac16

DEFAULT_SAMPLE_RATE = 16000

# Read with libsndfile first: its own formats, where it is faster than FFmpeg (wav, flac).
SNDFILE_EXTENSIONS = (
    ".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".aifc", ".au", ".snd", ".sph", ".nist",
    ".w64", ".caf", ".rf64", ".voc", ".wavex", ".htk", ".sf", ".ircam", ".mat", ".pvf", ".xi",
    ".paf", ".svx", ".sd2", ".wve",
)
# Read with FFmpeg (PyAV) first: formats libsndfile lacks or reads more slowly, and video containers.
FFMPEG_EXTENSIONS = (
    ".m4a", ".m4b", ".mp4", ".aac", ".mp3", ".opus", ".webm", ".mkv", ".mka", ".mov", ".3gp",
    ".wma", ".wmv", ".asf", ".amr", ".ac3", ".eac3", ".wv", ".ape", ".tta", ".spx", ".mpc", ".avi",
    ".flv", ".mp2",
)
# What names audio: stripped to form an utterance key (io.lists.key_of).
AUDIO_EXTENSIONS = SNDFILE_EXTENSIONS + FFMPEG_EXTENSIONS


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


class _Unreadable(Exception):
    """A decoder could not make sense of an existing file; `detail` says why (the other may try)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def ffmpeg_first(path: str | Path) -> bool:
    """Whether FFmpeg is the first decoder tried for `path` (by its extension)."""
    return str(path).lower().endswith(FFMPEG_EXTENSIONS)


def read_audio(path: str | Path, sample_rate: int = DEFAULT_SAMPLE_RATE) -> Audio:
    """Decode `path` to float32 mono at `sample_rate`; AudioError for anything unusable."""
    p = Path(path)
    fast = decode_flac16(p) if p.suffix.lower() == ".flac" else None  # None: libsndfile decides
    if fast is not None:
        data, rate = int16_to_float(fast[0]), fast[1]
    else:
        decoders = (_decode_ffmpeg, _decode_sndfile) if ffmpeg_first(p) else (_decode_sndfile, _decode_ffmpeg)
        data, rate = _with_fallback(p, decoders)
    return _finish(p, data, rate, sample_rate, checked=fast is not None)


def int16_to_float(data: np.ndarray) -> np.ndarray:
    """16-bit samples -> float32 in [-1, 1), in one pass: scaling by 2**-15 is exact, so these are the
    very samples libsndfile's own float conversion gives."""
    out = np.empty(data.shape, dtype=np.float32)
    np.multiply(data, np.float32(1.0 / 32768.0), out=out)
    return out


def _with_fallback(p: Path, decoders: tuple) -> tuple:
    """The first decoder's result, else the second's; the first one's reason when both fail."""
    try:
        return _guarded(p, decoders[0])
    except _Unreadable as exc:
        first = exc.detail
    try:
        result = _guarded(p, decoders[1])
    except _Unreadable:
        result = None
    if result is None or _empty(result):  # the second decoder's guess at a file the first refused
        raise AudioError(p, f"not readable audio ({first})")
    return result


def _empty(result: object) -> bool:
    if isinstance(result, AudioInfo):
        return result.seconds <= 0
    return np.size(result[0]) == 0


def _guarded(p: Path, decode):
    """Run one decoder; the user's file-system problems become AudioError at once (no fallback)."""
    try:
        return decode(p)
    except FileNotFoundError:
        raise AudioError(p, "no such file") from None
    except IsADirectoryError:
        raise AudioError(p, "is a directory, not an audio file") from None
    except PermissionError as exc:
        raise AudioError(p, f"cannot read ({exc.strerror or 'permission denied'})") from None
    except _Unreadable:
        if not p.exists():
            raise AudioError(p, "no such file") from None
        if p.is_dir():
            raise AudioError(p, "is a directory, not an audio file") from None
        if p.stat().st_size == 0:
            raise AudioError(p, "empty file (0 bytes)") from None
        raise


_INT16_SUBTYPES = ("PCM_16",)


def _decode_sndfile(p: Path) -> tuple[np.ndarray, int]:
    """(samples [n] or [n, channels] float32, rate) through libsndfile."""
    import soundfile as sf

    try:
        with sf.SoundFile(str(p)) as fh:
            rate = fh.samplerate
            if fh.subtype in _INT16_SUBTYPES:
                # 16-bit sources (most speech corpora): decoding to int16 skips libsndfile's float
                # conversion; scaling by 2**-15 is exact and gives the very same float32 samples.
                data = int16_to_float(fh.read(dtype="int16", always_2d=False))
            else:
                data = fh.read(dtype="float32", always_2d=False)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _Unreadable(detail.replace(f"Error opening {str(p)!r}: ", "").strip()) from None
    return data, int(rate)


# FFmpeg sample formats (planar and packed alike) -> (numpy dtype, scale, offset) to [-1, 1), as libsndfile's.
_FFMPEG_FORMATS = {
    "flt": (np.float32, 1.0, 0.0), "dbl": (np.float64, 1.0, 0.0), "s16": (np.int16, 2.0 ** -15, 0.0),
    "s32": (np.int32, 2.0 ** -31, 0.0), "s64": (np.int64, 2.0 ** -63, 0.0), "u8": (np.uint8, 2.0 ** -7, -128.0),
}


def _ffmpeg_error(exc: Exception) -> str:
    return (getattr(exc, "strerror", None) or str(exc).splitlines()[0] or type(exc).__name__).strip()


def _decode_ffmpeg(p: Path) -> tuple[np.ndarray, int]:
    """(samples [n] or [n, channels] float32, rate) of the first audio stream, through PyAV."""
    import av

    chunks: list[np.ndarray] = []  # [channels, n] per frame, views of the frames' own buffers
    rate = channels = 0
    fmt = layout = ""
    try:
        with av.open(str(p), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise _Unreadable("no audio stream")
            for frame in container.decode(container.streams.audio[0]):
                n = frame.samples
                if not n:
                    continue
                name = frame.format.name
                if name != fmt or frame.sample_rate != rate or frame.layout.name != layout:
                    if rate:
                        raise _Unreadable("sample rate, format or channel layout changes within the stream")
                    if name.rstrip("p") not in _FFMPEG_FORMATS:
                        raise _Unreadable(f"unsupported sample format {name}")
                    rate, fmt, layout = frame.sample_rate, name, frame.layout.name
                    channels = len(frame.layout.channels)
                    dtype = _FFMPEG_FORMATS[name.rstrip("p")][0]
                    planar = frame.format.is_planar
                planes = frame.planes
                if not planar:  # interleaved: [n * channels]
                    chunks.append(np.frombuffer(planes[0], dtype, count=n * channels).reshape(n, channels).T)
                elif channels == 1:
                    chunks.append(np.frombuffer(planes[0], dtype, count=n)[None])
                else:
                    chunks.append(np.stack([np.frombuffer(planes[c], dtype, count=n) for c in range(channels)]))
    except (FileNotFoundError, IsADirectoryError, PermissionError, _Unreadable):
        raise
    except (av.FFmpegError, OSError, ValueError, RuntimeError) as exc:
        raise _Unreadable(_ffmpeg_error(exc)) from None
    if not chunks:
        return np.zeros(0, np.float32), int(rate or DEFAULT_SAMPLE_RATE)
    data = np.concatenate(chunks, axis=1)  # a copy: the frames' buffers are let go
    _, scale, offset = _FFMPEG_FORMATS[fmt.rstrip("p")]
    if data.dtype == np.int16:  # exact, as for libsndfile's 16-bit path
        data = int16_to_float(data)
    elif data.dtype != np.float32:
        data = ((data.astype(np.float64) + offset) * scale).astype(np.float32)
    return (data[0] if channels == 1 else data.T), int(rate)


def mix_down(data: np.ndarray) -> np.ndarray:
    """Samples [n] or [n, channels] as one channel: the channels' mean in float32 (a view of a
    single channel as it is)."""
    if data.ndim == 2:
        return data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    return data


def _finish(p: Path, data: np.ndarray, rate: int, sample_rate: int, checked: bool = False) -> Audio:
    """Mix down, check, resample: the same for every decoder (`checked`: from integer samples, which
    cannot be NaN or infinite)."""
    channels = 1 if data.ndim == 1 else int(data.shape[1])
    data = mix_down(data)
    if data.size == 0:
        raise AudioError(p, "empty audio (0 samples)")
    if not checked and not np.isfinite(data).all():
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise AudioError(p, f"contains NaN or infinite samples ({bad} of {data.size})")
    wave = np.ascontiguousarray(data, dtype=np.float32)
    if rate != sample_rate:
        wave = resample(wave, int(rate), sample_rate)
    return Audio(wave=wave, sample_rate=sample_rate, source_rate=int(rate), channels=channels)


def load_audio(path: str | Path, sample_rate: int = DEFAULT_SAMPLE_RATE) -> np.ndarray:
    """float32 mono waveform of `path` at `sample_rate` (mixed down and resampled when needed)."""
    return read_audio(path, sample_rate).wave


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says, without decoding it (for corpus summaries)."""

    seconds: float
    sample_rate: int
    channels: int


def audio_info(path: str | Path) -> AudioInfo:
    """Duration, rate and channels from the header (libsndfile, else FFmpeg's container/stream
    duration or frame count); AudioError with the same reasons as read_audio."""
    p = Path(path)
    probes = (_probe_ffmpeg, _probe_sndfile) if ffmpeg_first(p) else (_probe_sndfile, _probe_ffmpeg)
    return _with_fallback(p, probes)


def _probe_sndfile(p: Path) -> AudioInfo:
    import soundfile as sf

    try:
        info = sf.info(str(p))
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _Unreadable(detail.replace(f"Error opening {str(p)!r}: ", "").strip()) from None
    return AudioInfo(seconds=info.frames / info.samplerate if info.samplerate else 0.0,
                     sample_rate=int(info.samplerate), channels=int(info.channels))


def _probe_ffmpeg(p: Path) -> AudioInfo:
    import av

    try:
        with av.open(str(p), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise _Unreadable("no audio stream")
            stream = container.streams.audio[0]
            ctx = stream.codec_context
            rate = int(ctx.sample_rate or 0)
            if stream.duration and stream.time_base:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration:
                seconds = container.duration / 1_000_000  # av.time_base
            elif stream.frames and ctx.frame_size and rate:
                seconds = stream.frames * ctx.frame_size / rate
            else:
                raise _Unreadable("no duration in the header")
            return AudioInfo(seconds=seconds, sample_rate=rate, channels=len(ctx.layout.channels))
    except (FileNotFoundError, IsADirectoryError, PermissionError, _Unreadable):
        raise
    except (av.FFmpegError, OSError, ValueError, RuntimeError) as exc:
        raise _Unreadable(_ffmpeg_error(exc)) from None


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
