"""Augmentation sources as the corpora come: MUSAN (`noise/ music/ speech/`) and RIRS_NOISES
(`simulated_rirs/`, `real_rirs_isotropic_noises/`), listed on first use and decoded on demand.

MUSAN: every audio file under `DIR/noise`, `DIR/music` or `DIR/speech` (or `DIR/musan/...`, as the
tarball unpacks). RIRS_NOISES (`DIR` or `DIR/RIRS_NOISES`): every audio file under `simulated_rirs/`,
and from `real_rirs_isotropic_noises/` the files its `rir_list` names (that folder also holds
isotropic noises; without a list, the files without `noise` in their name); a folder with neither
subfolder is taken as a plain tree of RIR files (the layout `dasv rirs` writes is the first kind).
Listings are sorted, so a plan's file index means the same file on every machine. Files are read
through io.audio (mono, resampled to the target rate; an RIR's first channel); an unusable one is an
AugmentError naming it.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from dasv_cli.errors import AugmentError, where
from dasv_cli.io.audio import AudioError, audio_info, read_audio, resample
from dasv_cli.io.lists import AUDIO_EXTENSIONS

MUSAN_PARTS = ("noise", "music", "speech")
SIMULATED = "simulated_rirs"
REAL = "real_rirs_isotropic_noises"


def _audio_files(root: Path, keep: Callable[[Path], bool] | None = None) -> list[Path]:
    """Audio files under `root`, sorted by relative path; hidden names (temporaries) skipped."""
    found = [p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".")
             and (keep is None or keep(p)) and p.is_file()]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


class Loader:
    """Decodes source files at one rate, keeping the most recent ones (up to `budget` samples).

    `first_channel`: a multi-channel file gives its first channel (RIRs of a microphone array:
    averaging the channels would smear the direct path; Kaldi and WeSpeaker take channel 1 too);
    otherwise channels are mixed down as io.audio does."""

    def __init__(self, rate: int, what: str, budget: int = 4_000_000, first_channel: bool = False) -> None:
        self.rate, self.what, self.budget, self.first_channel = rate, what, budget, first_channel
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._held = 0

    def __getstate__(self) -> dict:  # workers start with an empty cache
        return {"rate": self.rate, "what": self.what, "budget": self.budget, "first_channel": self.first_channel}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def _decode(self, path: Path) -> np.ndarray:
        try:
            audio = read_audio(path, self.rate)
            if audio.channels == 1 or not self.first_channel:
                return audio.wave
            import soundfile as sf  # the file decoded above: read its first channel alone

            first = sf.read(str(path), dtype="float32", always_2d=True)[0][:, 0]
            return resample(np.ascontiguousarray(first), audio.source_rate, self.rate)
        except AudioError as exc:
            raise AugmentError(f"{exc.path}: {exc.reason} ({self.what})") from None

    def load(self, path: Path) -> np.ndarray:
        """The waveform of `path` (float32, mono, at the rate); AugmentError when it is unusable."""
        name = str(path)
        if name in self._cache:
            self._cache.move_to_end(name)
            return self._cache[name]
        wave = self._decode(path)
        if not np.any(wave):
            raise AugmentError(f"{path}: silent, every sample is zero ({self.what})")
        self._cache[name] = wave
        self._held += wave.size
        while self._held > self.budget and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._held -= old.size
        return wave


class SourceFiles:
    """One kind of source: a lazily listed, sorted set of files and their loader (picklable, so
    worker processes can take it; each lists and caches on its own)."""

    def __init__(self, what: str, root: Path, lister: Callable[[], list[Path]], rate: int,
                 first_channel: bool = False) -> None:
        self.what, self.root = what, root
        self._lister = lister
        self._files: list[Path] | None = None
        self.loader = Loader(rate, what, first_channel=first_channel)

    def files(self) -> list[Path]:
        """The files (listed on first call); AugmentError when there are none."""
        if self._files is None:
            files = self._lister()
            if not files:
                raise AugmentError(f"{self.root}: no audio files ({self.what})")
            self._files = files
        return self._files

    def __len__(self) -> int:
        return len(self.files())

    def probe(self) -> None:
        """Read every file's header: AugmentError naming the first that is unreadable or empty."""
        for path in self.files():
            try:
                info = audio_info(path)
            except AudioError as exc:
                raise AugmentError(f"{exc.path}: {exc.reason} ({self.what})") from None
            if info.seconds <= 0:
                raise AugmentError(f"{path}: empty, no samples ({self.what})")

    def load(self, index: int) -> tuple[Path, np.ndarray]:
        path = self.files()[index]
        return path, self.loader.load(path)


def _existing_dir(path: Path, what: str) -> Path:
    if not path.exists():
        raise AugmentError(f"{path}: no such directory ({what})")
    if not path.is_dir():
        raise AugmentError(f"{path}: not a directory ({what})")
    return path


def musan(musan_dir: str | Path, part: str, rate: int) -> SourceFiles:
    """MUSAN's `noise`, `music` or `speech` files."""
    if part not in MUSAN_PARTS:
        raise ValueError(f"MUSAN has no part {part!r}")
    base = _existing_dir(Path(musan_dir), "MUSAN directory")
    for root in (base / part, base / "musan" / part):
        if root.is_dir():
            return SourceFiles(f"MUSAN {part}", root, partial(_audio_files, root), rate)
    raise AugmentError(f"{base}: no {part}/ directory (expected MUSAN's noise/ music/ speech/)")


def _rir_list_files(list_path: Path, real_dir: Path) -> list[Path]:
    """The RIRs a Kaldi `rir_list` names (path = last field, taken from the REAL component on)."""
    files = []
    text = list_path.read_text(encoding="utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        parts = Path(fields[-1]).parts
        rel = parts[parts.index(REAL) + 1:] if REAL in parts else parts[-1:]
        path = real_dir.joinpath(*rel)
        if not path.is_file():
            raise AugmentError(f"{where(list_path, number)}: {path}: no such file (room impulse response)")
        files.append(path)
    return sorted(set(files), key=lambda p: p.relative_to(real_dir).as_posix())


def _not_noise(path: Path) -> bool:
    return "noise" not in path.name.lower()


def _list_rirs(base: Path) -> list[Path]:
    sim, real = base / SIMULATED, base / REAL
    if not sim.is_dir() and not real.is_dir():
        return _audio_files(base)
    files = _audio_files(sim) if sim.is_dir() else []
    if real.is_dir():
        if (real / "rir_list").is_file():
            files += _rir_list_files(real / "rir_list", real)
        else:
            files += _audio_files(real, keep=_not_noise)
    return files


def rirs(rir_dir: str | Path, rate: int) -> SourceFiles:
    """The room impulse responses of a RIRS_NOISES-like tree (see the module text for the rules)."""
    base = _existing_dir(Path(rir_dir), "RIR directory")
    if not (base / SIMULATED).is_dir() and not (base / REAL).is_dir() and (base / "RIRS_NOISES").is_dir():
        base = base / "RIRS_NOISES"
    return SourceFiles("room impulse response", base, partial(_list_rirs, base), rate, first_channel=True)
