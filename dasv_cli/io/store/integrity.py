"""Shard integrity: a checksum of each shard's data, written when the shard is committed, and the
verify pass that recomputes it and names a damaged shard.

Format: a committed shard carries the attr `checksums`, JSON

    {"algorithm": "crc32", "feats": 3735928559, "keys": ..., "offsets": ..., "lengths": ...,
     "samples": ..., "mean": ..., "std": ...}

(a store with waveforms adds "audio" and "audio_offsets"; an --audio-only store has no feats,
offsets, lengths, mean or std)

one CRC-32 (zlib) per dataset, of its values as stored, row after row, as little-endian bytes (keys:
each key's UTF-8 bytes followed by a NUL). It is a checksum of the data, not of the file's bytes, so it
holds for any HDF5 layout and survives a copy; damage to HDF5's own structures shows as a shard that
cannot be read, which the verify pass reports as damaged too.

Why an attr, not a sidecar file: it travels with the shard and is committed by the same rename, so it
can never disagree with its shard after a crash or be left behind by a `cp shard-*.h5`. Why CRC-32:
it is in the standard library, costs little beside computing features (the writer checksums each
buffer it writes), catches every burst of up to 32 flipped bits and misses random damage with
probability 2^-32; nobody forges feature shards, so a cryptographic hash would buy nothing.

Who pays: `dasv inspect --verify` reads every shard whole; `dasv features` on a rerun verifies the
shards of the store (of its own part, with --part) before it builds on them. The training read path
never looks at the checksums. Shards written before checksums existed read as before; the verify
pass reports them as "no checksum".
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from dasv_cli.errors import DasvError
from dasv_cli.io.store.layout import check_shard, open_shard

CHECKSUM_ATTR = "checksums"
ALGORITHM = "crc32"
DATASETS = ("feats", "audio", "keys", "offsets", "lengths", "samples", "mean", "std", "audio_offsets")
COLUMNS = ("feats", "audio")  # read VERIFY_ROWS rows at a time
VERIFY_ROWS = 65536  # feats rows read at a time (21 MB as float32 x 80 bands)

OK = "ok"
DAMAGED = "damaged"
NO_CHECKSUM = "no checksum"


def array_crc(values: np.ndarray, crc: int = 0) -> int:
    """CRC-32 of an array's values as little-endian bytes in row-major order, continuing `crc`."""
    a = np.ascontiguousarray(values)
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    return zlib.crc32(memoryview(a).cast("B"), crc)


def keys_crc(keys: Iterable[str]) -> int:
    """CRC-32 of the keys, each as UTF-8 followed by a NUL."""
    crc = 0
    for key in keys:
        crc = zlib.crc32(key.encode("utf-8") + b"\0", crc)
    return crc


def checksums_attr(columns: dict[str, int], keys: Sequence[str], small: dict[str, np.ndarray]) -> str:
    """The `checksums` attr of a shard: the running CRCs of its columns (feats, audio), and those of
    its index datasets."""
    sums: dict[str, Any] = {"algorithm": ALGORITHM, **columns, "keys": keys_crc(keys)}
    sums.update({name: array_crc(values) for name, values in small.items()})
    return json.dumps(sums, sort_keys=True)


@dataclass(frozen=True)
class Verdict:
    """What the verify pass found in one shard: OK, DAMAGED (with what) or NO_CHECKSUM."""

    path: Path
    status: str
    detail: str = ""

    def line(self) -> str:
        return f"{self.path}: {self.status}" + (f" ({self.detail})" if self.detail else "")


def _dataset_crc(f: Any, name: str) -> int:
    ds = f[name]
    if name == "keys":
        return keys_crc(ds.asstr()[()])
    if name not in COLUMNS:
        return array_crc(ds[()])
    crc = 0
    for start in range(0, ds.shape[0], VERIFY_ROWS):
        crc = array_crc(ds[start:start + VERIFY_ROWS], crc)
    return crc


def verify_shard(path: str | Path) -> Verdict:
    """Recompute a shard's checksums; any shard HDF5 cannot read whole is DAMAGED too."""
    path = Path(path)
    try:
        with open_shard(path) as f:
            check_shard(f, path)
            raw = f.attrs.get(CHECKSUM_ATTR)
            if raw is None:
                return Verdict(path, NO_CHECKSUM, "written by a dasv before shards carried checksums")
            stored = json.loads(raw)
            if stored.get("algorithm") != ALGORITHM:
                return Verdict(path, DAMAGED, f"unknown checksum algorithm {stored.get('algorithm')!r}")
            bad = []
            for name in DATASETS:
                if name in stored and _dataset_crc(f, name) != int(stored[name]):
                    bad.append(name)
            if "feats" in f and int(np.sum(f["lengths"][()])) != f["feats"].shape[0]:
                bad.append("lengths (they do not add up to the frames)")
            if "audio" in f and int(np.sum(f["samples"][()])) != f["audio"].shape[0]:
                bad.append("samples (they do not add up to the stored audio)")
    except DasvError as exc:
        return Verdict(path, DAMAGED, exc.message.removeprefix(f"{path}: "))
    except (OSError, RuntimeError, ValueError, KeyError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        return Verdict(path, DAMAGED, f"unreadable: {first}")
    if bad:
        return Verdict(path, DAMAGED, f"checksum of {', '.join(bad)} differs from the one written with it")
    return Verdict(path, OK)


def verify_shards(shards: Sequence[Path], progress: bool = False) -> list[Verdict]:
    """verify_shard for each shard, in order (a progress bar on stderr when `progress`)."""
    from dasv_cli import progress as ui

    verdicts: list[Verdict] = []
    with ui.make_progress(transient=True) as bar:
        task = bar.add_task("verify", total=len(shards), visible=progress)
        for shard in shards:
            verdicts.append(verify_shard(shard))
            bar.advance(task)
    return verdicts


def damaged_message(directory: Path, damaged: Sequence[Verdict]) -> str:
    """One line naming the damaged shards (and what to do)."""
    shown = "; ".join(f"{v.path.name}: {v.detail}" for v in damaged[:3])
    more = f"; and {len(damaged) - 3} more" if len(damaged) > 3 else ""
    return (f"{directory}: {len(damaged)} damaged shard(s): {shown}{more}; remove them and rerun "
            f"`dasv features` to recompute their utterances")


__all__ = ["CHECKSUM_ATTR", "Verdict", "array_crc", "keys_crc", "checksums_attr", "verify_shard",
           "verify_shards", "damaged_message", "OK", "DAMAGED", "NO_CHECKSUM"]
