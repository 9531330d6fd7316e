"""The seeded plan of one augmented copy: which source files, at which SNRs, from which offsets.

Every number comes from a generator seeded by a stable hash (BLAKE2b, not Python's salted `hash()`)
of (seed, key, kind, copy), so a rerun, a resume or another worker order makes the same copy, and
two keys draw independently. The plan also depends on the sorted source listing (the number of
noise files, the babble pool), so the same corpora give the same copies.

Ranges are Kaldi's x-vector recipe: noise 0-15 dB, music 5-15 dB, babble 3-7 speakers at 13-20 dB
each; drawn uniformly as WeSpeaker does instead of from Kaldi's few fixed values.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from dasv_cli.augment.keys import ADDITIVE, KINDS, SPEED_FACTORS
from dasv_cli.errors import AugmentError, UsageError

SNR_RANGES = {"noise": (0.0, 15.0), "music": (5.0, 15.0), "babble": (13.0, 20.0)}
BABBLE_SPEAKERS = (3, 7)  # inclusive


def stable_seed(*parts: object) -> int:
    """A 64-bit seed from the text of `parts`, the same in every process and Python version."""
    text = "\x1f".join(str(p) for p in parts).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def rng_for(seed: int, key: str, kind: str, copy: int) -> np.random.Generator:
    """The generator of one copy's numbers (numpy's PCG64, stable across numpy releases)."""
    return np.random.default_rng(stable_seed("dasv-augment", seed, key, kind, copy))


@dataclass(frozen=True)
class Plan:
    """What one copy is made of. `sources` index the kind's sorted source list (or the babble pool);
    `snrs` (dB) and `offsets` (where in each source to start, a fraction of its free length) go with
    them; `factor` is the speed factor (1.0 for the other kinds)."""

    key: str
    kind: str
    copy: int
    sources: tuple[int, ...] = ()
    snrs: tuple[float, ...] = ()
    offsets: tuple[float, ...] = ()
    factor: float = 1.0


def make_plan(seed: int, key: str, kind: str, copy: int, n_sources: int = 0, own: int | None = None) -> Plan:
    """The plan of copy `copy` of `key`. `n_sources`: files (RIRs, noises) or babble pool size;
    `own`: the key's own index in the babble pool (never chosen: babble is other utterances)."""
    if kind not in KINDS:
        raise UsageError(f"unknown augmentation {kind!r} (choose from {', '.join(KINDS)})")
    if kind in SPEED_FACTORS:
        return Plan(key, kind, copy, factor=SPEED_FACTORS[kind])
    rng = rng_for(seed, key, kind, copy)
    if kind == "reverb":
        if n_sources < 1:
            raise AugmentError("reverb: no room impulse responses to draw from")
        return Plan(key, kind, copy, sources=(int(rng.integers(n_sources)),))
    assert kind in ADDITIVE
    lo, hi = SNR_RANGES[kind]
    if kind == "babble":
        others = n_sources - (1 if own is not None else 0)
        if others < BABBLE_SPEAKERS[0]:
            raise AugmentError(f"babble needs at least {BABBLE_SPEAKERS[0]} other utterances, "
                               f"the pool has {others}")
        count = min(int(rng.integers(BABBLE_SPEAKERS[0], BABBLE_SPEAKERS[1] + 1)), others)
        picks = rng.choice(others, size=count, replace=False)
        if own is not None:
            picks = np.where(picks >= own, picks + 1, picks)  # skip the key's own utterance
        sources = tuple(int(i) for i in picks)
    else:
        if n_sources < 1:
            raise AugmentError(f"{kind}: no {kind} files to draw from")
        count = 1
        sources = (int(rng.integers(n_sources)),)
    snrs = tuple(float(x) for x in rng.uniform(lo, hi, size=count))
    offsets = tuple(float(x) for x in rng.random(size=count))
    return Plan(key, kind, copy, sources=sources, snrs=snrs, offsets=offsets)
