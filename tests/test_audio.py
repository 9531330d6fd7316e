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


# ---------------------------------------------------------------------------------------------
# FFmpeg (PyAV) formats: VoxCeleb2's m4a, mp3, opus, the audio of video containers


def _speech(demo_files, seconds: float = 2.0) -> np.ndarray:
    return sf.read(str(demo_files[0]), dtype="float32")[0][: int(16000 * seconds)]


def test_m4a_is_pyavs_own_decoding_as_mono_float32(tmp_path, demo_files):
    from test_m4a import encode, pyav_decode

    path = encode(tmp_path / "u.m4a", _speech(demo_files), 16000)
    audio = read_audio(path)
    planes, rate, channels = pyav_decode(path)
    assert (audio.source_rate, audio.channels, rate, channels) == (16000, 1, 16000, 1)
    assert audio.wave.dtype == np.float32 and audio.wave.ndim == 1
    np.testing.assert_array_equal(audio.wave, planes[0].astype(np.float32))


def test_stereo_48k_m4a_is_mixed_down_then_resampled(tmp_path, demo_files):
    import soxr

    from test_m4a import encode, pyav_decode

    hi = soxr.resample(_speech(demo_files), 16000, 48000, quality="HQ")
    path = encode(tmp_path / "st.m4a", np.stack([hi, np.zeros_like(hi)]), 48000)
    audio = read_audio(path)
    planes, rate, _ = pyav_decode(path)
    assert audio.channels == 2 and audio.source_rate == 48000 and audio.resampled
    expected = soxr.resample(planes.mean(axis=0).astype(np.float32), 48000, 16000, quality="HQ")
    np.testing.assert_allclose(audio.wave, expected, atol=1e-6)


@pytest.mark.parametrize("name, codec, rate, video", [
    ("u.mp3", "libmp3lame", 16000, False),
    ("u.opus", "libopus", 48000, False),
    ("u.mp4", "aac", 16000, True),  # a video container: its audio stream is read
    ("u.mkv", "aac", 16000, True),
])
def test_ffmpeg_formats(tmp_path, demo_files, name, codec, rate, video):
    import soxr

    from test_m4a import encode

    speech = _speech(demo_files)
    src = speech if rate == 16000 else soxr.resample(speech, 16000, rate, quality="HQ")
    path = encode(tmp_path / name, src, rate, codec=codec, video=video)
    audio = read_audio(path)
    assert audio.source_rate == rate and audio.wave.dtype == np.float32
    assert abs(audio.seconds - 2.0) < 0.1  # codec delay and padding only
    # the speech that went in, behind the codec's delay (none for AAC: its priming is skipped)
    from scipy.signal import correlate

    xc = correlate(audio.wave, speech[:24000], mode="valid", method="fft")
    lag = int(np.argmax(xc))
    assert lag < 1200 and (lag == 0 or codec != "aac")
    seg = audio.wave[lag: lag + 24000]
    assert np.corrcoef(seg, speech[:24000])[0, 1] > 0.95


def test_misnamed_and_extensionless_files_are_still_read(tmp_path, demo_files):
    """The extension picks the first decoder; the other one is tried when it cannot read the file."""
    from test_m4a import encode

    speech = _speech(demo_files)
    m4a = read_audio(encode(tmp_path / "real.m4a", speech, 16000)).wave
    (tmp_path / "real.m4a").rename(tmp_path / "fake.wav")
    np.testing.assert_array_equal(read_audio(tmp_path / "fake.wav").wave, m4a)
    sf.write(tmp_path / "real.wav", speech, 16000, subtype="PCM_16")
    wav = read_audio(tmp_path / "real.wav").wave
    (tmp_path / "real.wav").rename(tmp_path / "fake.m4a")
    np.testing.assert_array_equal(read_audio(tmp_path / "fake.m4a").wave, wav)
    (tmp_path / "fake.m4a").rename(tmp_path / "noext")
    np.testing.assert_array_equal(read_audio(tmp_path / "noext").wave, wav)


def _video_only(path):
    import av

    with av.open(str(path), "w") as out:
        vs = out.add_stream("mpeg4", rate=10)
        vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
        for k in range(3):
            vf = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            vf.pts = k
            for p in vs.encode(vf):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
    return path


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda d: d / "missing.m4a", "no such file"),
        (lambda d: (d / "dir.m4a").mkdir() or d / "dir.m4a", "is a directory"),
        (lambda d: _written(d / "junk.m4a", b"\x00\x00\x00\x18ftypM4A garbage" * 40), "not readable audio"),
        (lambda d: _written(d / "text.mp3", b"hello"), "not readable audio"),
        (lambda d: _video_only(d / "silent.mp4"), "not readable audio (no audio stream)"),
    ],
)
def test_unusable_ffmpeg_files_give_the_same_reasons(tmp_path, make, reason):
    from dasv_cli.io.audio import audio_info

    path = make(tmp_path)
    for call in (load_audio, audio_info):
        with pytest.raises(AudioError) as info:
            call(path)
        assert reason in info.value.reason, info.value.reason
        assert str(path) in info.value.message and "\n" not in info.value.message


def test_audio_info_reads_headers_only(tmp_path, demo_files):
    from dasv_cli.io.audio import audio_info

    from test_m4a import encode

    speech = _speech(demo_files)
    sf.write(tmp_path / "u.wav", speech, 16000, subtype="PCM_16")
    info = audio_info(tmp_path / "u.wav")
    assert (info.seconds, info.sample_rate, info.channels) == (2.0, 16000, 1)
    m4a = audio_info(encode(tmp_path / "u.m4a", np.stack([speech, speech]), 16000))
    assert abs(m4a.seconds - 2.0) < 0.07 and m4a.sample_rate == 16000 and m4a.channels == 2
    flac = audio_info(demo_files[0])
    assert flac.seconds == sf.info(str(demo_files[0])).duration


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_32", "PCM_U8", "FLOAT", "DOUBLE"])
def test_ffmpeg_sample_formats_scale_as_libsndfile(tmp_path, monkeypatch, subtype):
    """The same WAV bytes through FFmpeg (named .m4a, so FFmpeg goes first) and libsndfile: packed
    stereo in every integer and float width gives the same float32 mono."""
    from dasv_cli.io.audio import ffmpeg_first

    stereo = np.stack([_tone(16000), _tone(16000, freq=1000.0)], axis=1) * 1.5
    sf.write(tmp_path / "x.wav", stereo, 16000, subtype=subtype, format="WAV")
    (tmp_path / "x.m4a").write_bytes((tmp_path / "x.wav").read_bytes())
    assert ffmpeg_first(tmp_path / "x.m4a") and not ffmpeg_first(tmp_path / "x.wav")
    via_sndfile = read_audio(tmp_path / "x.wav")
    from dasv_cli.io import audio as audio_module

    def no_sndfile(path):
        raise AssertionError("libsndfile was asked")

    monkeypatch.setattr(audio_module, "_decode_sndfile", no_sndfile)
    via_ffmpeg = read_audio(tmp_path / "x.m4a")
    assert via_ffmpeg.channels == via_sndfile.channels == 2
    np.testing.assert_allclose(via_ffmpeg.wave, via_sndfile.wave, rtol=0, atol=1e-7)


def test_flac_fast_path_gives_libsndfiles_samples_and_declines_what_it_cannot_vouch_for(tmp_path, demo_files):
    """16-bit FLAC goes through dr_flac (io.flac) only when it decodes the header's whole sample count:
    a truncated or corrupted file, or another bit depth, is left to libsndfile and its reasons."""
    from dasv_cli.io.flac import decode_flac16

    rng = np.random.default_rng(5)
    stereo = (0.2 * rng.standard_normal((22050, 2))).astype(np.float32)
    sf.write(tmp_path / "st44.flac", stereo, 44100, subtype="PCM_16")
    for path in (demo_files[0], tmp_path / "st44.flac"):
        fast = decode_flac16(path)
        assert fast is not None and fast[0].dtype == np.int16
        raw, rate = sf.read(str(path), dtype="int16")
        assert fast[1] == rate
        np.testing.assert_array_equal(fast[0], raw)
    np.testing.assert_array_equal(read_audio(demo_files[0]).wave, sf.read(str(demo_files[0]), dtype="float32")[0])
    np.testing.assert_array_equal(read_audio(tmp_path / "st44.flac", 44100).wave,
                                  sf.read(str(tmp_path / "st44.flac"), dtype="float32")[0].mean(axis=1, dtype=np.float32))

    sf.write(tmp_path / "deep.flac", stereo[:, 0], 16000, subtype="PCM_24")
    assert decode_flac16(tmp_path / "deep.flac") is None  # 24 bits would be rounded to 16
    np.testing.assert_array_equal(read_audio(tmp_path / "deep.flac").wave,
                                  sf.read(str(tmp_path / "deep.flac"), dtype="float32")[0])

    whole = demo_files[0].read_bytes()
    (tmp_path / "cut.flac").write_bytes(whole[: len(whole) // 2])
    assert decode_flac16(tmp_path / "cut.flac") is None  # dr_flac alone would return the first half
    with pytest.raises(AudioError) as err:
        read_audio(tmp_path / "cut.flac")
    with pytest.raises(sf.LibsndfileError) as lib:
        sf.read(str(tmp_path / "cut.flac"))
    assert "lost sync" in str(lib.value) and "lost sync" in err.value.reason
    (tmp_path / "fake.flac").write_bytes(b"fLaC" + bytes(rng.integers(0, 256, 3000, dtype=np.uint8)))
    assert decode_flac16(tmp_path / "fake.flac") is None
