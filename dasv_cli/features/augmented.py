"""`dasv features --augment`: augmented copies stored beside each clean utterance, under derived keys.

For each listed file the clean features and every copy the spec asks for (`KEY#reverb`, `KEY#noise-2`,
..., dasv_cli.augment.keys) are made from one decode of the file: a copy is the augmented waveform
(dasv_cli.augment.augmenter, seeded per key, kind and copy) put through the same log-mel. A key
already stored is never recomputed, so a store with the clean key but not all of its copies (a run
without --augment, an interrupted one, a spec that grew) gets only the missing copies, and a resume
stores the numbers a straight run would. The sources are listed and every source file's header read
before any work, so a missing, empty or corrupt corpus is one error with nothing written; a source
that fails later (a file that decodes to silence) fails the copy that drew it, in failed.tsv.

Every shard such a run writes carries the attr `augment` (JSON: the spec, the seed and the sources'
fingerprints); a later run whose seed or corpora differ from those of the stored copies is refused,
since its copies would not be the ones a straight run makes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dasv_cli.augment.augmenter import Augmenter
from dasv_cli.augment.keys import SPEEDS, AugKey, check_clean_key, derived_keys, parse_spec
from dasv_cli.dsp.logmel import LogMelConfig
from dasv_cli.errors import InputError, UsageError, where
from dasv_cli.features.compute import Failed, FileFeatures, Outcome, features_of, guarded
from dasv_cli.io.lists import AudioEntry

ATTR = "augment"  # the shard attr that holds a run's augmentation, as JSON
FORMAT = "dasv-augment"


@dataclass(frozen=True)
class AugmentOptions:
    """What `--augment KINDS [--copies K] [--rir-dir D] [--musan-dir D]` asks for. `kinds`: what
    augment.keys.parse_spec reads (`reverb,noise:2,speed`); `copies` is the count of every random
    kind named without its own `:N` (a speed copy has no random draw: always one)."""

    kinds: str
    copies: int = 1
    rir_dir: str | Path | None = None
    musan_dir: str | Path | None = None
    seed: int = 0

    def spec(self) -> tuple[tuple[str, int], ...]:
        """((kind, copies), ...) in KINDS order."""
        if self.copies < 1:
            raise UsageError(f"--copies must be at least 1, got {self.copies}")
        fixed = {"speed", *SPEEDS}
        items = []
        for raw in self.kinds.split(","):
            item = raw.strip()
            if item and ":" not in item and item not in fixed:
                item = f"{item}:{self.copies}"
            items.append(item)
        return parse_spec(items)


@dataclass(frozen=True)
class Work:
    """One listed file's share of a run: its clean features (unless stored) and the missing copies."""

    key: str
    path: str
    clean: bool
    copies: tuple[AugKey, ...]

    @property
    def units(self) -> int:
        """Utterances this file adds to the store when all goes well."""
        return int(self.clean) + len(self.copies)


@dataclass
class AugmentJob:
    """The augmentation of one run: picklable, so worker processes take it (each decodes and caches
    the sources on its own)."""

    augmenter: Augmenter
    spec: tuple[tuple[str, int], ...]
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def attr(self) -> str:
        """The shard attr value: the provenance as JSON."""
        return json.dumps(self.provenance, sort_keys=True)

    def todo(self, entries: Sequence[AudioEntry], stored: set[str]) -> list[Work]:
        """The files with anything left to store, each with what is missing."""
        out = []
        for e in entries:
            missing = tuple(a for a in derived_keys(e.key, self.spec) if a.key not in stored)
            if e.key not in stored or missing:
                out.append(Work(e.key, str(e.path), e.key not in stored, missing))
        return out

    def compute(self, work: Work, cfg: LogMelConfig, dtype: str) -> list[Outcome]:
        """The clean features (when missing) and each missing copy, from one decode of the file."""
        from dasv_cli.io.audio import read_audio

        holder: list = []

        def decode() -> FileFeatures:
            audio = read_audio(work.path, cfg.sample_rate)
            holder.append(audio)
            return features_of(audio.wave, audio.source_rate, cfg, dtype)

        first = guarded(work.key, work.path, decode)
        if isinstance(first, Failed):
            if not work.clean:  # the clean features are stored: the file is gone or changed since
                first = Failed(work.key, work.path, f"{first.reason} (its augmented copies were not made)")
            return [first]
        out: list[Outcome] = [first] if work.clean else []
        audio = holder[0]
        for a in work.copies:
            made = guarded(a.key, work.path, partial(self._copy, a, audio.wave, audio.source_rate, cfg, dtype),
                           kind=a.kind)
            if isinstance(made, Failed):
                made = Failed(a.key, work.path, f"copy {a.key}: {made.reason}")
            out.append(made)
        return out

    def _copy(self, a: AugKey, wave: np.ndarray, source_rate: int, cfg: LogMelConfig, dtype: str) -> FileFeatures:
        return features_of(self.augmenter.apply(a.clean, wave, a.kind, a.copy), source_rate, cfg, dtype)


def prepare_job(options: AugmentOptions, entries: Sequence[AudioEntry], cfg: LogMelConfig,
                source: str = "the audio list") -> AugmentJob:
    """The run's AugmentJob, its sources checked (every file's header read): DasvError before any work.
    `entries`: the whole list (babble draws from it; with --part, every part draws from all of it),
    read from `source` (for messages)."""
    from dasv_cli import progress as ui

    spec = options.spec()
    for e in entries:
        check_clean_key(e.key, where(source, e.line) if e.line else str(e.path))
    kinds = [kind for kind, _ in spec]
    pool = [(e.key, str(e.path)) for e in entries] if "babble" in kinds else None
    augmenter = Augmenter(kinds, rir_dir=options.rir_dir, musan_dir=options.musan_dir, babble_pool=pool,
                          seed=options.seed, rate=cfg.sample_rate)
    counts = augmenter.check(probe=True)
    provenance = {"format": FORMAT, "spec": {kind: n for kind, n in spec}, **augmenter.provenance()}
    shown = ", ".join(f"{kind} x{n}" + (f" ({counts[kind]} sources)" if kind in counts else "") for kind, n in spec)
    ui.log(f"augmented copies of every file: {shown}")
    return AugmentJob(augmenter, spec, provenance)


def stored_provenance(out: Path) -> dict[Path, dict[str, Any]]:
    """{shard: provenance} of the complete shards of `out` written with --augment."""
    from dasv_cli.io.store.layout import list_shards, open_shard

    found = {}
    for shard in list_shards(out):
        with open_shard(shard) as f:
            raw = f.attrs.get(ATTR)
        if raw is None:
            continue
        try:
            info = json.loads(raw)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{shard}: unreadable '{ATTR}' attribute ({exc})") from None
        if isinstance(info, dict):
            found[shard] = info
    return found


def check_store(out: Path, job: AugmentJob) -> None:
    """Refuse to add copies made with another seed, rate or corpus than the stored copies of the same
    kinds (a resume would not store what a straight run stores); a babble pool (the list) that differs
    is only a warning: growing a list is normal, and the stored babble copies stay valid."""
    from dasv_cli import progress as ui

    mine = job.provenance
    warned = False
    for shard, theirs in stored_provenance(out).items():
        common = [k for k in mine["spec"] if k in theirs.get("spec", {})]
        if not common:
            continue
        for name in ("seed", "rate"):
            if theirs.get(name) != mine[name]:
                raise UsageError(f"{out}: {shard.name} holds copies made with augmentation {name} {theirs.get(name)!r}, "
                                 f"this run's is {mine[name]!r}; use the same, or --overwrite, or another -o")
        for kind in common:
            a, b = theirs.get("sources", {}).get(kind, {}), mine["sources"].get(kind, {})
            if a.get("digest") == b.get("digest"):
                continue
            if kind == "babble":
                if not warned:
                    ui.warn(f"{out}: its babble copies were drawn from another list ({a.get('files')} utterances, "
                            f"this one has {b.get('files')}); new babble copies draw from this list")
                    warned = True
                continue
            raise UsageError(f"{out}: {shard.name} holds {kind} copies made from {a.get('root')} "
                             f"({a.get('files')} files); this run's {kind} sources are {b.get('root')} "
                             f"({b.get('files')} files, other names); use the same sources, or --overwrite, "
                             f"or another -o")
