"""The augmentation engine: a clean waveform and a (key, kind, copy) -> the augmented waveform.

`Augmenter(kinds, rir_dir=..., musan_dir=..., babble_pool=..., seed=..., rate=...)` checks at once
that every kind has its source; `check()` lists them all (call it before hours of work); `apply`
makes one copy from its seeded plan, `copies` every copy a spec asks for under its derived key.
The object is picklable (worker processes take it; each decodes and caches sources on its own).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from dasv_cli.augment import sources
from dasv_cli.augment.babble import BabblePool, add_babble
from dasv_cli.augment.keys import KINDS, SPEED_FACTORS, derive_key
from dasv_cli.augment.mix import add_at_snrs, fit_length, limit
from dasv_cli.augment.plan import Plan, make_plan
from dasv_cli.augment.reverb import reverberate
from dasv_cli.augment.speed import perturb_speed
from dasv_cli.errors import UsageError

_MUSAN_PART = {"noise": "noise", "music": "music"}


class Augmenter:
    """Makes augmented copies; see the module text. `babble_pool`: (key, path) pairs, usually the
    list being augmented (babble never uses the utterance itself)."""

    def __init__(self, kinds: Iterable[str], *, rir_dir: str | Path | None = None,
                 musan_dir: str | Path | None = None,
                 babble_pool: Sequence[tuple[str, str | Path]] | None = None,
                 seed: int = 0, rate: int = 16000) -> None:
        self.kinds = tuple(dict.fromkeys(kinds))
        self.seed, self.rate = int(seed), int(rate)
        for kind in self.kinds:
            if kind not in KINDS:
                raise UsageError(f"unknown augmentation {kind!r} (choose from {', '.join(KINDS)})")
        self._files: dict[str, sources.SourceFiles] = {}
        self._pool: BabblePool | None = None
        if "reverb" in self.kinds:
            if rir_dir is None:
                raise UsageError("reverb needs a directory of room impulse responses "
                                 "(RIRS_NOISES, or one made by `dasv rirs -o DIR`)")
            self._files["reverb"] = sources.rirs(rir_dir, self.rate)
        for kind, part in _MUSAN_PART.items():
            if kind in self.kinds:
                if musan_dir is None:
                    raise UsageError(f"{kind} needs the MUSAN directory (with {part}/)")
                self._files[kind] = sources.musan(musan_dir, part, self.rate)
        if "babble" in self.kinds:
            if not babble_pool:
                raise UsageError("babble needs a pool of utterances to mix (the list being augmented)")
            self._pool = BabblePool(babble_pool, self.rate)

    def check(self, probe: bool = False) -> dict[str, int]:
        """List every source now: {kind: number of files (babble: pool size)}; AugmentError if any is empty.
        `probe`: also read every source file's header (about 0.1 ms each), so a corrupt or empty file
        stops the run before any work instead of failing the copies that draw it."""
        counts = {kind: len(files) for kind, files in self._files.items()}
        if probe:
            for files in self._files.values():
                files.probe()
        if self._pool is not None:
            make_plan(self.seed, "", "babble", 1, len(self._pool), own=0)  # fails when the pool is too small
            counts["babble"] = len(self._pool)
        return counts

    def provenance(self) -> dict:
        """What the copies are made from, as plain JSON: seed, rate, and per kind its source root, file
        count and a digest of the sorted relative names (babble: of the pool's keys), so a store can
        tell whether copies added later come from the same sources as the ones it holds."""
        out: dict = {"seed": self.seed, "rate": self.rate, "sources": {}}
        for kind, files in self._files.items():
            names = [p.relative_to(files.root).as_posix() for p in files.files()]
            out["sources"][kind] = {"root": str(files.root.resolve()), "files": len(names), "digest": _digest(names)}
        if self._pool is not None:
            out["sources"]["babble"] = {"root": "the list", "files": len(self._pool),
                                        "digest": _digest(self._pool.keys)}
        return out

    def plan(self, key: str, kind: str, copy: int = 1) -> Plan:
        """The seeded choices of one copy (sources, SNRs, offsets, speed factor)."""
        self._require(kind)
        if kind == "babble":
            assert self._pool is not None
            return make_plan(self.seed, key, kind, copy, len(self._pool), own=self._pool.index_of(key))
        if kind in SPEED_FACTORS:
            return make_plan(self.seed, key, kind, copy)
        return make_plan(self.seed, key, kind, copy, len(self._files[kind]))

    def source_paths(self, plan: Plan) -> list[Path]:
        """The files a plan draws from (for logs and provenance)."""
        if plan.kind == "babble":
            assert self._pool is not None
            return [self._pool.paths[i] for i in plan.sources]
        if plan.kind in SPEED_FACTORS:
            return []
        files = self._files[plan.kind].files()
        return [files[i] for i in plan.sources]

    def apply(self, key: str, wave: np.ndarray, kind: str, copy: int = 1) -> np.ndarray:
        """Copy `copy` of utterance `key` (its clean waveform `wave`, float32 mono at the rate) made by
        `kind`: float32 in [-1, 1]; as long as `wave` except for speed (len / factor)."""
        x = np.asarray(wave, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"expected a mono waveform, got shape {x.shape}")
        plan = self.plan(key, kind, copy)
        if x.size == 0:
            return x.copy()
        if kind in SPEED_FACTORS:
            return limit(perturb_speed(x, plan.factor, self.rate))
        if kind == "reverb":
            _, rir = self._files["reverb"].load(plan.sources[0])
            return limit(reverberate(x, rir))
        if kind == "babble":
            assert self._pool is not None
            talkers = [self._pool.load(i)[1] for i in plan.sources]
            return limit(add_babble(x, talkers, plan.snrs, plan.offsets))
        _, noise = self._files[kind].load(plan.sources[0])
        return limit(add_at_snrs(x, [fit_length(noise, x.size, plan.offsets[0])], plan.snrs))

    def copies(self, key: str, wave: np.ndarray,
               spec: Sequence[tuple[str, int]]) -> Iterator[tuple[str, np.ndarray]]:
        """(derived key, waveform) for every copy of `key` that `spec` ((kind, copies), ...) asks for."""
        for kind, count in spec:
            for c in range(1, count + 1):
                yield derive_key(key, kind, c), self.apply(key, wave, kind, c)

    def _require(self, kind: str) -> None:
        if kind not in self.kinds:
            raise UsageError(f"augmentation {kind!r} was not set up (this Augmenter makes {', '.join(self.kinds)})")


def _digest(names: Sequence[str]) -> str:
    """A short, stable fingerprint of a sorted list of names."""
    import hashlib

    h = hashlib.blake2b(digest_size=8)
    for name in names:
        h.update(name.encode("utf-8", "surrogatepass") + b"\n")
    return h.hexdigest()
