"""Decode speed of dasv's two decoders on the same speech: libsndfile (soundfile) and FFmpeg (PyAV).

The files of a folder (default: the bundled demo speech, 40 LibriSpeech FLAC files, 4.8 min) are
written as 16-bit WAV, FLAC and AAC m4a (PyAV's encoder, 16 kHz mono, as VoxCeleb2 ships it); each
set is then decoded, in this one process on one core, by each decoder that reads it: soundfile
(WAV, FLAC), PyAV (WAV, FLAC, m4a), and `dasv_cli.io.audio.read_audio` (which picks the decoder by
extension and returns float32 mono). Figure: x real-time = audio seconds / decode seconds, the
median of --repeats passes, passes interleaved so that load from other processes hits every variant
alike. The load average is printed.

    OMP_NUM_THREADS=1 taskset -c 0 python bench/decode.py
    python bench/decode.py --data ../shared/data/librispeech-train-clean-5-lite --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _sndfile(path: str) -> np.ndarray:
    import soundfile as sf

    return sf.read(path, dtype="float32")[0]


def _pyav(path: str) -> np.ndarray:
    import av

    with av.open(path) as c:
        return np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)


def _dasv(path: str) -> np.ndarray:
    from dasv_cli.io.audio import read_audio

    return read_audio(path).wave


def _write_sets(src: list[Path], out: Path) -> tuple[dict[str, list[str]], float]:
    import av
    import soundfile as sf

    sets: dict[str, list[str]] = {"wav": [], "flac": [], "m4a": []}
    seconds = 0.0
    for i, f in enumerate(src):
        wave, rate = sf.read(str(f), dtype="float32")
        seconds += len(wave) / rate
        for ext in ("wav", "flac"):
            p = out / f"{i}.{ext}"
            sf.write(p, wave, rate, subtype="PCM_16")
            sets[ext].append(str(p))
        p = out / f"{i}.m4a"
        with av.open(str(p), "w") as o:
            st = o.add_stream("aac", rate=rate, layout="mono")
            frame = av.AudioFrame.from_ndarray(wave[None], format="flt", layout="mono")
            frame.sample_rate, frame.pts = rate, 0
            for pkt in st.encode(frame):
                o.mux(pkt)
            for pkt in st.encode(None):
                o.mux(pkt)
        sets["m4a"].append(str(p))
    return sets, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / "dasv_cli" / "data" / "demo")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    src = sorted(args.data.rglob("*.flac"))
    variants = [("soundfile", "wav", _sndfile), ("soundfile", "flac", _sndfile), ("pyav", "wav", _pyav),
                ("pyav", "flac", _pyav), ("pyav", "m4a", _pyav), ("dasv read_audio", "wav", _dasv),
                ("dasv read_audio", "flac", _dasv), ("dasv read_audio", "m4a", _dasv)]
    with tempfile.TemporaryDirectory() as tmp:
        sets, seconds = _write_sets(src, Path(tmp))
        for _, ext, fn in variants:  # warm-up: imports, page cache
            fn(sets[ext][0])
        times: dict[int, list[float]] = {i: [] for i in range(len(variants))}
        for _ in range(args.repeats):
            for i, (_, ext, fn) in enumerate(variants):
                t = time.perf_counter()
                for path in sets[ext]:
                    fn(path)
                times[i].append(time.perf_counter() - t)
    print(f"{len(src)} files, {seconds / 60:.1f} min of audio; load average {os.getloadavg()[0]:.2f}; "
          f"median of {args.repeats}")
    print("decoder           format  x real-time")
    for i, (name, ext, _) in enumerate(variants):
        print(f"{name:<17} {ext:<6} {seconds / statistics.median(times[i]):>10.0f}")


if __name__ == "__main__":
    main()
