"""Chunked embedding (eval/chunked.py): the same embedding as one whole-utterance pass, for every
front-end dasv has, at lengths around chunk boundaries; and the log-mel computed block by block."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dasv_cli.dsp.logmel import LogMelConfig, logmel, logmel_frames, normalise, utterance_stats
from dasv_cli.eval.chunked import Features, TorchParts, embed_features, frame_sequence, plan_chunks
from dasv_cli.model import ModelConfig, SpeakerNet
from dasv_cli.model.config import FRONT_ENDS

torch.set_num_threads(1)

CHUNK = 64  # frames: small, so that short real speech crosses several chunk boundaries


# chunked vs one pass: float32 rounding of the same sums in another order (measured below 2e-6 here);
# an untrained tiny net's embedding moves little with its input (pooling only the first of several
# chunks moved it by 5e-4 to 1e-3), so the 1e-4 would let a gross pooling error through
TIGHT = 1e-5


def tiny(front_end: str, pooling: str = "DoubleMHA", seed: int = 0) -> SpeakerNet:
    """(Statistical pooling with the paper's numerics: the original's std is NaN for one frame vector.)"""
    torch.manual_seed(seed)
    net = SpeakerNet(ModelConfig(front_end=front_end, kernel_size=16, heads=4, embedding_size=12, num_speakers=5,
                                 pooling=pooling, numerics="paper" if pooling == "Statistical" else "original"))
    for m in net.modules():  # BatchNorm statistics away from identity, so the head is not trivial
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    with torch.no_grad():  # peaked attention: an untrained net's near-uniform weights hide pooling errors
        for p in net.pooling.parameters():
            p.mul_(30.0)
    return net.eval()


@pytest.fixture(scope="module")
def speech(demo_files) -> np.ndarray:
    from dasv_cli.io.audio import read_audio

    return np.concatenate([read_audio(f).wave for f in demo_files[:3]]).astype(np.float32)


def whole(net: SpeakerNet, feats: np.ndarray, norm: str = "cmn") -> np.ndarray:
    x = normalise(feats, *utterance_stats(feats), norm)
    if x.shape[0] < net.min_frames:
        x = np.concatenate([x] * -(-net.min_frames // x.shape[0]))[:net.min_frames]
    with torch.no_grad():
        return net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None])[0].numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("block", [1, 7, 64, 100000])
def test_logmel_in_blocks_is_the_whole_logmel(speech, block) -> None:
    cfg = LogMelConfig()
    wave = speech[:16000 * 3 + 123]
    ref = logmel(wave, cfg)
    got = np.concatenate([logmel_frames(wave, s, min(s + block, ref.shape[0]), cfg)
                          for s in range(0, ref.shape[0], block)])
    np.testing.assert_array_equal(got, ref)
    feats = Features.of_wave(wave, cfg, "cmvn", block)
    mean, std = utterance_stats(ref)
    np.testing.assert_allclose(feats.mean, mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(feats.std, std, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(feats.read(3, ref.shape[0] - 2), normalise(ref, mean, std, "cmvn")[3:-2], atol=1e-5)


@pytest.mark.parametrize("front_end", sorted(FRONT_ENDS))
def test_declared_receptive_field_is_enough(front_end) -> None:
    """Perturbing input frame i changes only outputs j with i in [j S - field, (j + 1) S + field): the
    margin chunking relies on. Some output must change (the probe is not blind)."""
    fe = tiny(front_end).front_end
    stride, field = fe.time_stride, fe.receptive_field
    assert fe.time_global is False
    torch.manual_seed(1)
    x = torch.randn(1, 240, 80)
    with torch.no_grad():
        base = fe(x)
        for i in (0, 5, 63, 64, 120, 239):
            y = x.clone()
            y[0, i] += 10.0
            changed = torch.nonzero((fe(y) - base).abs().amax(dim=2)[0] > 0).flatten().tolist()
            assert changed, (front_end, i)
            for j in changed:
                assert j * stride - field <= i < (j + 1) * stride + field, (front_end, i, j, stride, field)


def test_plan_chunks_covers_every_frame_once() -> None:
    for total in (1, 15, 16, 17, 63, 64, 65, 1000):
        chunks = plan_chunks(total, 16, 76, 64)
        assert chunks[0].start == 0 and chunks[-1].stop == total
        assert all(a.stop == b.start for a, b in zip(chunks, chunks[1:]))
        assert all(c.start % 16 == 0 and c.lo % 16 == 0 and c.lo <= c.start < c.stop <= c.hi for c in chunks)


@pytest.mark.parametrize("front_end", sorted(FRONT_ENDS))
@pytest.mark.parametrize("pooling", ["DoubleMHA", "Statistical"])
def test_chunked_embedding_is_the_whole_utterance_one(speech, front_end, pooling) -> None:
    net = tiny(front_end, pooling)
    parts = TorchParts(net)
    cfg = LogMelConfig()
    full = logmel(speech, cfg)
    # shorter than the minimum, than one chunk, chunk multiples +- 1 frame, several chunks, not aligned
    for frames in (5, net.min_frames, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK - 1, 2 * CHUNK + 1, 5 * CHUNK + 37,
                   full.shape[0]):
        wave = speech[:(frames - 1) * cfg.hop_length + cfg.n_fft]
        ref = whole(net, logmel(wave, cfg))
        got = embed_features(parts, Features.of_wave(wave, cfg, "cmn", block=48), CHUNK)
        assert np.abs(got - ref).max() < TIGHT, (front_end, frames, np.abs(got - ref).max())
        assert cosine(got, ref) >= 0.9999
        if frames > 2 * CHUNK:  # the check can fail: pooling only the first chunk's frames is 10x off
            first = whole(net, logmel(wave[:(CHUNK - 1) * cfg.hop_length + cfg.n_fft], cfg))
            assert np.abs(first - ref).max() > 10 * TIGHT, (front_end, pooling, np.abs(first - ref).max())
        if frames >= net.min_frames:  # the frame-level sequence itself, before the pooling averages it
            feats = Features.of_wave(wave, cfg, "cmn", block=48)
            with torch.no_grad():
                one_pass = net.front_end(torch.from_numpy(feats.read(0, feats.total))[None]).numpy()
            np.testing.assert_allclose(frame_sequence(parts, feats, CHUNK), one_pass, rtol=1e-4, atol=1e-5)


def test_time_global_front_end_runs_whole_with_a_warning(speech, capsys) -> None:
    net = tiny("ECAPA")  # squeeze-excitation averages over the whole input
    assert net.front_end.time_global
    cfg = LogMelConfig()
    wave = speech[:16000 * 4]
    got = embed_features(TorchParts(net), Features.of_wave(wave, cfg, "cmn", block=48), CHUNK, name="x.wav")
    np.testing.assert_allclose(got, whole(net, logmel(wave, cfg)), atol=1e-5)
    assert "x.wav" in capsys.readouterr().err
    # a second long recording of the same model says nothing more (a corpus would say it per file)
    embed_features(TorchParts(net), Features.of_wave(wave, cfg, "cmn", block=48), CHUNK, name="y.wav")
    assert "one pass" not in capsys.readouterr().err
    embed_features(TorchParts(tiny("ECAPA")), Features.of_wave(wave, cfg, "cmn", block=48), CHUNK, name="z.wav")
    assert "z.wav" in capsys.readouterr().err  # another model says it again


@pytest.mark.parametrize("waveform,pooling", [(False, "DoubleMHA"), (True, "DoubleMHA"), (False, "Statistical"),
                                              (False, "ASTP")])
def test_onnx_extractor_chunked_is_its_whole_graph(speech, tmp_path, monkeypatch, waveform, pooling) -> None:
    """The exported graph cut at its front-end and at its pooling (deploy.split), run chunk by chunk
    with the pooling streamed from the graph's weights, gives what the whole graph gives on the whole
    recording; only ASTP, which has no stream, gets the whole frame-level sequence."""
    pytest.importorskip("onnxruntime")
    import dasv_cli.eval.chunked as chunked
    from test_export import save_tiny_checkpoint

    from dasv_cli.deploy.export import export_onnx
    from dasv_cli.deploy.runtime import OnnxExtractor

    net = tiny("VGG4L", pooling)
    with torch.no_grad():  # peaked attention, so that weights read wrongly from the graph would show
        for p in net.pooling.parameters():
            p.mul_(30.0)
    save_tiny_checkpoint(tmp_path / "t.pt", net, "cmvn")
    export_onnx(tmp_path / "t.pt", tmp_path / "t.onnx", waveform=waveform)
    runtime = OnnxExtractor(tmp_path / "t.onnx", threads=1)
    assert runtime.layout() == (16, 76, False)
    assert (runtime.pooler() is None) == (pooling == "ASTP")
    if pooling != "ASTP":
        monkeypatch.setattr(chunked, "frame_sequence", lambda *a: pytest.fail("the frame-level sequence was held"))
    cfg = LogMelConfig()
    for frames in (9, CHUNK + 1, 3 * CHUNK - 1, 6 * CHUNK + 5):
        wave = speech[:(frames - 1) * cfg.hop_length + cfg.n_fft]
        ref = runtime.embed_waveforms(wave[None])[0]
        got = embed_features(runtime, Features.of_wave(wave, cfg, runtime.norm, block=48), CHUNK)
        assert np.abs(got - ref).max() < 1e-4 and cosine(got, ref) >= 0.9999, (frames, np.abs(got - ref).max())


def test_audio_list_is_read_one_file_at_a_time(demo_files, monkeypatch) -> None:
    """Each file is embedded (and yielded) before the next one is decoded."""
    import dasv_cli.io.audio_stream as audio_stream
    from dasv_cli.eval.audio_embed import iter_audio_embeddings
    from dasv_cli.io.lists import AudioEntry

    read = []
    real = audio_stream.open_wave
    monkeypatch.setattr(audio_stream, "open_wave", lambda path, *a, **k: read.append(path) or real(path, *a, **k))
    entries = [AudioEntry(key=f.stem, path=f, line=i + 1) for i, f in enumerate(demo_files[:3])]
    for n, (keys, vectors) in enumerate(iter_audio_embeddings(tiny("VGG3L"), entries, None, progress=False)):
        assert len(read) == n + 1 and keys == [entries[n].key] and vectors.shape == (1, 12)
    assert len(read) == 3


def test_long_stored_utterances_are_chunked_with_the_same_embeddings(data) -> None:
    """embed --features / validate: utterances longer than the chunk go through eval.chunked."""
    from dasv_cli.eval.embed import embed_store
    from dasv_cli.io.store.reader import FeatureStore

    net = tiny("VGG4L")
    with FeatureStore(data / "feats") as store:
        keys = store.keys()[:6]
        assert max(store.length(k) for k in keys) > 2 * CHUNK
        whole_pass = embed_store(net, store, keys, progress=False, chunk=10**9)
        chunked = embed_store(net, store, keys, progress=False, chunk=CHUNK)
    np.testing.assert_allclose(chunked, whole_pass, atol=1e-4)


@pytest.mark.parametrize("pooling,numerics", [("DoubleMHA", "original"), ("DoubleMHA", "paper"), ("MHA", "original"),
                                              ("MHA", "paper"), ("Attention", "paper"), ("Statistical", "paper"),
                                              ("Statistical", "original")])
def test_streamed_pooling_is_the_one_pass_pooling(pooling, numerics) -> None:
    """model.pooling_stream, fed chunks of frame vectors (sizes straddling a chunk of 7), gives the
    pooling's forward on the whole sequence; the scores are made large so a running maximum that grows
    mid-sequence (rescaled sums) is exercised."""
    from dasv_cli.model.pooling import build_pooling
    from dasv_cli.model.pooling_stream import stream_of

    torch.manual_seed(3)
    pool = build_pooling(pooling, 32, heads=4, numerics=numerics).eval()
    for t in (1, 6, 7, 8, 13, 14, 15, 50):
        if numerics == "original" and pooling == "Statistical" and t == 1:
            continue  # the unbiased std of one frame vector is NaN (checked below)
        x = torch.randn(2, t, 32) * 3 + torch.linspace(0, 4, t)[None, :, None]  # scores grow along time
        with torch.no_grad():
            ref = pool(x)
            for size in (1, 7, 64):
                stream = stream_of(pool)
                for s in range(0, t, size):
                    stream.update(x[:, s:s + size])
                got = stream.result()
                assert got.shape == ref.shape and got.dtype == ref.dtype
                torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    if pooling == "Statistical" and numerics == "original":
        stream = stream_of(pool)
        stream.update(torch.randn(1, 1, 32))
        assert torch.isnan(stream.result()[0, 32:]).all()


def test_astp_has_no_stream() -> None:
    from dasv_cli.model.pooling import build_pooling
    from dasv_cli.model.pooling_stream import stream_of

    assert stream_of(build_pooling("ASTP", 32)) is None


@pytest.mark.parametrize("kind", ["flac", "wav16", "wav-float-stereo"])
def test_streamed_decode_gives_the_whole_decode_features(demo_files, tmp_path, kind) -> None:
    """io.audio_stream reads a real FLAC and WAVs by seeking, span by span, with the very samples
    read_audio gives; the log-mel computed from those spans (eval.chunk_features) is the whole one."""
    import soundfile as sf

    from dasv_cli.io.audio import read_audio
    from dasv_cli.io.audio_stream import SoundFileReader, open_wave

    path = demo_files[0]
    if kind != "flac":
        wave = read_audio(path).wave
        path = tmp_path / "x.wav"
        if kind == "wav16":
            sf.write(path, wave, 16000, subtype="PCM_16")
        else:
            sf.write(path, np.stack([wave, 0.5 * wave[::-1]], axis=1), 16000, subtype="FLOAT")
    ref = read_audio(path).wave
    reader = open_wave(path, 16000)
    assert isinstance(reader, SoundFileReader) and reader.samples == ref.shape[0]
    for a, b in ((0, 1), (0, 5000), (4321, 4322), (4321, 40000), (ref.shape[0] - 777, ref.shape[0])):
        np.testing.assert_array_equal(reader.read(a, b), ref[a:b])
    assert reader.mean_square == pytest.approx(float(np.mean(np.square(ref, dtype=np.float64))), rel=1e-9)
    cfg = LogMelConfig()
    whole_feats = logmel(ref, cfg)
    feats = Features.of_reader(reader, cfg, "cmvn", 100)
    mean, std = utterance_stats(whole_feats)
    np.testing.assert_allclose(feats.mean, mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(feats.std, std, rtol=1e-6, atol=1e-6)
    for a, b in ((0, 64), (63, 400), (1, feats.total)):
        np.testing.assert_allclose(feats.read(a, b), normalise(whole_feats, mean, std, "cmvn")[a:b], atol=1e-5)
        np.testing.assert_array_equal(feats.raw(a, b), whole_feats[a:b])


def test_resampled_file_is_read_whole(shared_data) -> None:
    """An 8 kHz file is resampled over its whole signal (read_audio's samples), so it is held whole."""
    from dasv_cli.io.audio import read_audio
    from dasv_cli.io.audio_stream import ArrayReader, open_wave

    path = sorted((shared_data / "fsdd-8khz-sample").glob("*.wav"))[0]
    reader = open_wave(path, 16000)
    assert isinstance(reader, ArrayReader)
    np.testing.assert_array_equal(reader.read(0, reader.samples), read_audio(path, 16000).wave)


def test_long_file_is_embedded_in_bounded_spans(speech, tmp_path, monkeypatch) -> None:
    """compare/embed --audio of a long WAV: no read of the file spans more than one chunk with its
    margins, the frame-level sequence is never assembled (the pooling streams), and the embedding is
    the whole-recording one."""
    import soundfile as sf

    import dasv_cli.eval.chunked as chunked
    from dasv_cli.eval.audio_embed import iter_audio_embeddings
    from dasv_cli.io.audio_stream import SoundFileReader
    from dasv_cli.io.lists import AudioEntry

    wave = np.concatenate([speech] * 2)
    path = tmp_path / "long.wav"
    sf.write(path, wave, 16000, subtype="PCM_16")
    spans = []
    real_read = SoundFileReader.read
    monkeypatch.setattr(SoundFileReader, "read", lambda self, a, b: spans.append(b - a) or real_read(self, a, b))
    monkeypatch.setattr(chunked, "frame_sequence", lambda *a: pytest.fail("the frame-level sequence was held whole"))
    net = tiny("VGG4L")
    (_, got), = iter_audio_embeddings(net, [AudioEntry(key="long", path=path, line=1)], None, progress=False,
                                      chunk_seconds=CHUNK / 100)
    cfg = LogMelConfig()
    assert len(spans) > 10 and max(spans) <= (CHUNK + 2 * 80) * cfg.hop_length + cfg.n_fft < wave.shape[0] / 10
    ref = whole(net, logmel(np.asarray(sf.read(path, dtype="float32")[0]), cfg))
    assert np.abs(got[0] - ref).max() < 1e-4 and cosine(got[0], ref) >= 0.9999


@pytest.mark.parametrize("pooling", ["MHA", "Attention", "ASTP"])
def test_chunked_embedding_other_poolings(speech, pooling) -> None:
    """MHA and Attention stream their pooling; ASTP gets the whole frame-level sequence: both equal
    the one-pass embedding."""
    net = tiny("VGG4L", pooling)
    cfg = LogMelConfig()
    assert (TorchParts(net).pooler() is None) == (pooling == "ASTP")
    for frames in (CHUNK + 1, 5 * CHUNK + 37):
        wave = speech[:(frames - 1) * cfg.hop_length + cfg.n_fft]
        ref = whole(net, logmel(wave, cfg))
        got = embed_features(TorchParts(net), Features.of_wave(wave, cfg, "cmn", block=48), CHUNK)
        assert np.abs(got - ref).max() < 1e-4 and cosine(got, ref) >= 0.9999, (frames, np.abs(got - ref).max())
