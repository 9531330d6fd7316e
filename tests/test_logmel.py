"""The log-mel recipe: parity with a float64 NumPy/librosa reference written from DESIGN.md, edges, CMN/CMVN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dasv_cli.dsp.logmel import LogMelConfig, logmel, mel_filterbank, normalise, utterance_stats
from dasv_cli.dsp.logmel_torch import logmel_batch
from dasv_cli.io.audio import load_audio

TOL = 1e-3


def reference_logmel(wave: np.ndarray, sr: int = 16000) -> np.ndarray:
    """DESIGN.md's recipe in float64, step by step: [frames, 80].

    Waveform x 32768; pre-emphasis 0.97 (first sample x 0.03); frames of the 512-point FFT every
    160 samples without centring; a 400-sample periodic Hamming window centred in each 512 frame;
    magnitude spectrum; 80 Slaney mel bands 0..sr/2 without normalisation; ln(max(1, x)).
    """
    import librosa
    import scipy.signal

    y = np.asarray(wave, dtype=np.float64) * 32768.0
    y = np.concatenate([[y[0] * (1 - 0.97)], y[1:] - 0.97 * y[:-1]])
    n_fft, hop, win = 512, 160, 400
    frames = 1 + (len(y) - n_fft) // hop
    window = np.zeros(n_fft)
    left = (n_fft - win) // 2
    window[left:left + win] = scipy.signal.get_window("hamming", win, fftbins=True)
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spec = np.abs(np.fft.rfft(y[idx] * window, n=n_fft, axis=1))
    mel = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=80, fmin=0.0, fmax=sr / 2, norm=None, dtype=np.float64)
    return np.log(np.maximum(1.0, spec @ mel.T))


def test_reference_matches_the_original_librosa_calls(demo_files):
    """The hand-written reference equals the original tool's librosa.stft/melspectrogram pipeline."""
    import librosa

    wave = load_audio(demo_files[0]).astype(np.float64)
    y = wave * 32768.0
    y[1:] = y[1:] - 0.97 * y[:-1]
    y[0] *= 1 - 0.97
    S = np.abs(librosa.stft(y, n_fft=512, hop_length=160, win_length=400, window="hamming", center=False))
    M = librosa.feature.melspectrogram(S=S, sr=16000, n_mels=80, fmin=0, fmax=8000, norm=None)
    original = np.log(np.maximum(1, M)).T
    ref = reference_logmel(wave)
    assert ref.shape == original.shape
    assert np.abs(ref - original).max() < 1e-6


def test_mel_filterbank_equals_librosa_slaney_without_norm():
    import librosa

    ours = mel_filterbank(LogMelConfig())
    theirs = librosa.filters.mel(sr=16000, n_fft=512, n_mels=80, fmin=0, fmax=8000, norm=None, dtype=np.float64)
    assert ours.shape == (80, 257)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


def test_parity_on_the_bundled_speech(demo_files):
    worst = 0.0
    for path in demo_files:
        wave = load_audio(path)
        ours = logmel(wave)
        ref = reference_logmel(wave)
        assert ours.dtype == np.float32 and ours.shape == ref.shape == (1 + (len(wave) - 512) // 160, 80)
        worst = max(worst, float(np.abs(ours - ref).max()))
    assert worst <= TOL, f"max |dasv - reference| = {worst}"


def test_parity_on_an_8khz_fsdd_file_after_dasv_resampling(shared_data):
    """Compared after dasv's own resampling: both sides take load_audio's 16 kHz waveform."""
    path = shared_data / "fsdd-8khz-sample" / "0_george_0.wav"
    import soundfile as sf

    assert sf.info(str(path)).samplerate == 8000
    wave = load_audio(path)
    assert abs(len(wave) - 2 * sf.info(str(path)).frames) <= 1
    ours = logmel(wave)
    ref = reference_logmel(wave)
    assert ours.shape == ref.shape
    assert float(np.abs(ours - ref).max()) <= TOL


def test_frame_count_and_short_signals():
    cfg = LogMelConfig()
    rng = np.random.default_rng(0)
    for n, frames in ((512, 1), (671, 1), (672, 2), (16000, 97), (400, 1), (511, 1)):
        assert cfg.num_frames(n) == frames
        assert logmel(rng.standard_normal(n).astype(np.float32) * 0.1).shape == (frames, 80)
    # 400 <= N < 512: the same frame as the signal zero-padded at the end to 512 samples
    short = rng.standard_normal(450).astype(np.float32) * 0.1
    padded = np.concatenate([short, np.zeros(62, np.float32)])
    np.testing.assert_allclose(logmel(short), reference_logmel(padded), atol=TOL, rtol=0)
    with pytest.raises(ValueError, match="too short"):
        logmel(np.zeros(399, np.float32))
    with pytest.raises(ValueError, match="1-D"):
        logmel(np.zeros((2, 1000), np.float32))


def test_silence_hits_the_log_floor_and_torch_input_gives_torch():
    out = logmel(np.zeros(4000, np.float32))
    assert np.all(out == 0.0)  # ln(max(1, 0))
    wave = torch.from_numpy(np.random.default_rng(1).standard_normal(8000).astype(np.float32) * 0.1)
    t = logmel(wave)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    np.testing.assert_array_equal(t.numpy(), logmel(wave.numpy()))


def _batch_parity(waves: list[np.ndarray], samples: int) -> float:
    """max |logmel_batch - logmel| over equal-length cuts of `waves` (cut at several offsets)."""
    cuts = [w[o:o + samples] for w in waves for o in (0, 1234, 16000) if len(w) >= o + samples]
    out = logmel_batch(torch.from_numpy(np.stack(cuts)))
    assert out.shape == (len(cuts), LogMelConfig().num_frames(samples), 80) and out.dtype == torch.float32
    return max(float(np.abs(out[i].numpy() - logmel(c)).max()) for i, c in enumerate(cuts))


def test_torch_batch_equals_the_numpy_path_on_speech(demo_files, shared_data):
    """The batched torch log-mel (online augmentation's) equals the stored features' NumPy recipe."""
    demo = [load_audio(p) for p in demo_files]
    real = [load_audio(p) for p in sorted((shared_data / "librispeech-train-clean-5-lite").rglob("*.flac"))[:12]]
    worst = max(_batch_parity(demo, 32352), _batch_parity(real, 32352), _batch_parity(real, 16000 * 3 + 17))
    assert worst <= TOL, f"max |torch batch - numpy| = {worst}"
    # edges: one frame from 400..511 samples (zero-padded), silence at the floor, shapes refused
    short = np.random.default_rng(3).standard_normal((2, 450)).astype(np.float32) * 0.1
    np.testing.assert_allclose(logmel_batch(torch.from_numpy(short))[1].numpy(), logmel(short[1]), atol=TOL)
    assert float(logmel_batch(torch.zeros(3, 4000)).abs().max()) == 0.0
    with pytest.raises(ValueError, match="too short"):
        logmel_batch(torch.zeros(2, 399))
    with pytest.raises(ValueError, match="batch"):
        logmel_batch(torch.zeros(4000))


def test_config_round_trip_and_unknown_keys():
    cfg = LogMelConfig()
    assert LogMelConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["n_mels"] == 80 and cfg.to_dict()["hop_length"] == 160
    with pytest.raises(ValueError, match="unknown"):
        LogMelConfig.from_dict({**cfg.to_dict(), "dither": 1.0})


def test_stats_and_normalisation_numpy_and_torch():
    rng = np.random.default_rng(2)
    feats = (rng.standard_normal((300, 80)) * 3 + 7).astype(np.float32)
    mean, std = utterance_stats(feats)
    np.testing.assert_allclose(mean, feats.astype(np.float64).mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, feats.astype(np.float64).std(0), rtol=1e-5)
    cmn = normalise(feats, mean, std, "cmn")
    np.testing.assert_allclose(cmn.mean(0), 0, atol=1e-4)
    cmvn = normalise(feats, mean, std, "cmvn")
    np.testing.assert_allclose(cmvn.std(0), 1, atol=1e-3)
    assert normalise(feats, mode="none") is feats
    # a window normalised with the whole utterance's stats, numpy and torch alike
    window = feats[100:150]
    np.testing.assert_allclose(normalise(window, mean, std, "cmvn"), cmvn[100:150], atol=1e-5)
    tw = torch.from_numpy(np.stack([window, window]))  # [B, T, F]
    out = normalise(tw, torch.from_numpy(np.stack([mean, mean])), torch.from_numpy(np.stack([std, std])), "cmvn")
    np.testing.assert_allclose(out[1].numpy(), cmvn[100:150], atol=1e-5)
    # without stats: over the time axis of the input itself
    np.testing.assert_allclose(normalise(torch.from_numpy(feats), mode="cmn").numpy(), cmn, atol=1e-4)
    with pytest.raises(ValueError):
        normalise(feats, mode="cvn")
