"""Audio loading: formats, mix-down, resampling, and the reasons given for unusable files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from dasv_cli.io.audio import AudioError, load_audio, read_audio, resample


def _tone(sr: int, seconds: float = 0.5, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_flac_is_read_as_float32_mono_unchanged(demo_files):
    audio = read_audio(demo_files[0])
    raw, sr = sf.read(str(demo_files[0]), dtype="float32")
    assert sr == 16000 and audio.source_rate == 16000 and not audio.resampled
    assert audio.wave.dtype == np.float32 and audio.wave.ndim == 1
    np.testing.assert_array_equal(audio.wave, raw)


def test_stereo_is_mixed_down_and_formats_are_read(tmp_path):
    left, right = _tone(16000), _tone(16000, freq=1000.0)
    sf.write(tmp_path / "st.wav", np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    wave = load_audio(tmp_path / "st.wav")
    np.testing.assert_allclose(wave, (left + right) / 2, atol=1e-7)
    sf.write(tmp_path / "m.ogg", left, 16000, format="OGG", subtype="VORBIS")
    ogg = load_audio(tmp_path / "m.ogg")
    assert ogg.dtype == np.float32 and abs(len(ogg) - len(left)) < 400
    sf.write(tmp_path / "m.aiff", left, 16000, subtype="PCM_16")
    np.testing.assert_allclose(load_audio(tmp_path / "m.aiff"), left, atol=1 / 32768)


def test_8khz_is_resampled_to_16khz_like_librosa(tmp_path):
    import librosa

    tone = _tone(8000, seconds=1.0)
    sf.write(tmp_path / "lo.wav", tone, 8000, subtype="FLOAT")
    audio = read_audio(tmp_path / "lo.wav")
    assert audio.resampled and audio.source_rate == 8000 and audio.sample_rate == 16000
    assert len(audio.wave) == 16000
    spectrum = np.abs(np.fft.rfft(audio.wave))
    assert abs(np.argmax(spectrum) * 16000 / len(audio.wave) - 440.0) <= 1.0  # same pitch
    expected = librosa.resample(tone, orig_sr=8000, target_sr=16000, res_type="soxr_hq")
    np.testing.assert_allclose(audio.wave, expected, atol=1e-6)
    np.testing.assert_array_equal(resample(tone, 16000, 16000), tone)


def test_fsdd_8khz_file(shared_data):
    path = sorted((shared_data / "fsdd-8khz-sample").glob("*.wav"))[0]
    audio = read_audio(path)
    assert audio.source_rate == 8000 and audio.resampled
    assert abs(len(audio.wave) - 2 * sf.info(str(path)).frames) <= 1


def _written(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda d: d / "missing.wav", "no such file"),
        (lambda d: d, "is a directory"),
        (lambda d: _written(d / "junk.wav", b"RIFF\x00\x01garbage" * 50), "not readable audio"),
        (lambda d: _written(d / "text.flac", b"hello"), "not readable audio"),
    ],
)
def test_unusable_files_give_a_reason(tmp_path, make, reason):
    path = make(tmp_path)
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert reason in info.value.reason
    assert str(path) in info.value.message and "\n" not in info.value.message


def test_empty_and_non_finite_audio_are_refused(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty audio"):
        load_audio(tmp_path / "empty.wav")
    bad = _tone(16000)
    bad[100] = np.nan
    bad[200] = np.inf
    sf.write(tmp_path / "nan.wav", bad, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or infinite samples \\(2 of"):
        load_audio(tmp_path / "nan.wav")
