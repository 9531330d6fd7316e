"""What a feature store looks like on disk: file names, the datasets and attrs of a shard, the recipe policy.

A store is a directory of `shard-NNNNN.h5` files. Each shard holds

    feats    [frames, n_mels] float32|float16, chunked along frames (a window read touches only
             the chunks it overlaps), utterances concatenated in order
    keys     [n] utf-8 utterance keys
    offsets  [n] int64 first frame of each utterance in `feats`
    lengths  [n] int64 frames of each utterance
    samples  [n] int64 samples at the recipe's rate (for hours of audio)
    mean     [n, n_mels] float32 per-utterance mean over time (of the float32 features)
    std      [n, n_mels] float32 per-utterance standard deviation over time (ddof=0)

and, in a store made with `dasv features --keep-audio` (attr content = "features+audio"),

    audio          [total samples] int16 16 kHz PCM of the utterances, concatenated in order,
                   chunked (AUDIO_CHUNK_SAMPLES) so a waveform window touches only its chunks
    audio_offsets  [n] int64 first sample of each utterance in `audio` (its length: `samples`)

A waveform store (`dasv features --audio-only`, content = "audio": noise, music, RIR corpora) holds
keys, samples, audio and audio_offsets only.

and attrs: format, format_version, dasv_version, dtype, the recipe's fields one by one (sample_rate,
n_mels, n_fft, win_length, hop_length, window, preemphasis, scale, fmin, fmax, mel_scale, log_floor,
...) and `recipe` (the same as JSON, the exact round trip); a shard written by `dasv features
--augment` also has `augment` (JSON: the spec, seed and source fingerprints of its copies).

A shard is written under a temporary name (`.shard-NNNNN.h5.XXXXXX.tmp`, io.atomic), fsynced and
renamed when complete, so a complete-looking shard is always complete; readers ignore temporary
files. `DIR/failed.tsv` lists inputs that failed (path, reason) and `DIR/.dasv-features.lock` keeps
a second writer out.

Parts (`dasv features --part I/N`, I = 1..N): N writers fill one directory at once, each under its
own names, so they never touch each other's files: `shard-p0003of0008-00012.h5`,
`failed-p0003of0008.tsv`, `.dasv-features-p0003of0008.lock`. A reader takes the union of all
complete shards, with and without a part in their name.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dasv_cli.errors import InputError
from dasv_cli.io.plain import plain

STORE_FORMAT = "dasv-features"
STORE_FORMAT_VERSION = 1
# `shard-00012.h5` (a run without --part) or `shard-p0003of0008-00012.h5` (part 3 of 8)
SHARD_RE = re.compile(r"^shard-(?:p(\d{4,})of(\d{4,})-)?(\d{5,})\.h5$")
FAILED_NAME = "failed.tsv"
FAILED_RE = re.compile(r"^failed(?:-p\d{4,}of\d{4,})?\.tsv$")
# io.atomic's temporary names (`.shard-00003.h5.k2j_x9.tmp`, `.failed-p0001of0002.tsv.k2j_x9.tmp`); also
# the fixed `.shard-00003.h5.tmp` of earlier versions, so a run they left killed is cleaned up too
TMP_RE = re.compile(r"^\.(?:shard-(?:p\d{4,}of\d{4,}-)?\d{5,}\.h5|failed(?:-p\d{4,}of\d{4,})?\.tsv)"
                    r"(?:\.[A-Za-z0-9_]+)?\.tmp$")
LOCK_NAME = ".dasv-features.lock"
DTYPES = ("float32", "float16")
DEFAULT_SHARD_FRAMES = 250_000  # ~42 min of audio, ~80 MB as float32; a crash loses at most one
DEFAULT_CHUNK_FRAMES = 128
REQUIRED = ("feats", "keys", "offsets", "lengths", "mean", "std")
AUDIO_REQUIRED = ("keys", "samples", "audio", "audio_offsets")
CONTENTS = ("features", "features+audio", "audio")  # attr `content`; absent means "features"
AUDIO_CHUNK_SAMPLES = 16_384  # 32 KiB: a 2 s window spans 2-3 chunks, read in one pread when adjacent


def required(content: str) -> tuple[str, ...]:
    """The datasets a shard with this content must hold."""
    return {"features": REQUIRED, "audio": AUDIO_REQUIRED}.get(content, REQUIRED + AUDIO_REQUIRED[2:])


def shard_content(attrs: Any) -> str:
    """The content attr of a shard ("features" for shards written before there was one)."""
    value = attrs.get("content", "features")
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Part:
    """Part `index` of `count` (1-based) of a list split across writers: every count-th entry."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count:
            raise ValueError(f"part {self.index} of {self.count}: parts are numbered 1..{self.count}")

    @property
    def tag(self) -> str:
        """`p0003of0008`: what the names of this part's files carry."""
        return f"p{self.index:04d}of{self.count:04d}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_name(index: int, part: Part | None = None) -> str:
    return f"shard-{part.tag}-{index:05d}.h5" if part is not None else f"shard-{index:05d}.h5"


def failed_name(part: Part | None = None) -> str:
    """`failed.tsv`, or `failed-p0003of0008.tsv` for a part."""
    return f"failed-{part.tag}.tsv" if part is not None else FAILED_NAME


def lock_name(part: Part | None = None) -> str:
    """The lock of a part (`.dasv-features-p0003of0008.lock`); the directory's own is LOCK_NAME."""
    return f".dasv-features-{part.tag}.lock" if part is not None else LOCK_NAME


def _shard_order(name: str) -> tuple[int, int, int] | None:
    """(parts, part, index) of a shard name: runs without a part first, then split by split."""
    m = SHARD_RE.match(name)
    if not m:
        return None
    part, count, index = m.groups()
    return (int(count or 0), int(part or 0), int(index))


def shard_part(path: Path) -> Part | None:
    """The part a shard's name carries (None for a run without --part)."""
    order = _shard_order(path.name)
    if order is None:
        raise ValueError(f"not a shard name: {path.name}")
    return Part(order[1], order[0]) if order[0] else None


def list_shards(directory: str | Path) -> list[Path]:
    """Complete shards in `directory`: those without a part first, then part by part, each part's in
    index order (temporary files are not shards)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = []
    for entry in os.scandir(d):
        order = _shard_order(entry.name)
        if order is not None and entry.is_file():
            found.append((order, Path(entry.path)))
    return [p for _, p in sorted(found)]


def list_failed(directory: str | Path) -> list[Path]:
    """`failed.tsv` and every part's `failed-pIIIIofNNNN.tsv` in `directory`, sorted by name."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted(Path(e.path) for e in os.scandir(d) if FAILED_RE.match(e.name) and e.is_file())


def list_temporary(directory: str | Path, part: Part | None = None) -> list[Path]:
    """Temporary files (shards, failed lists) left by an interrupted writer: all of them, or with
    `part` only that part's (the others may belong to parts that are writing right now)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = [Path(e.path) for e in os.scandir(d) if TMP_RE.match(e.name)]
    if part is not None:
        found = [p for p in found if _temporary_tag(p.name) == part.tag]
    return sorted(found)


def _temporary_tag(name: str) -> str | None:
    """`p0003of0008` for a temporary file of part 3 of 8; None for one of a run without a part."""
    m = re.match(r"^\.(?:shard|failed)-(p\d{4,}of\d{4,})[-.]", name)
    return m.group(1) if m else None


def shard_index(path: Path) -> int:
    order = _shard_order(path.name)
    if order is None:
        raise ValueError(f"not a shard name: {path.name}")
    return order[2]


def shard_attrs(recipe: dict[str, Any], dtype: str, n_utterances: int, n_frames: int,
                content: str = "features") -> dict[str, Any]:
    """The attrs a complete shard carries (check_shard reads them back)."""
    from dasv_cli import __version__

    attrs: dict[str, Any] = {
        "format": STORE_FORMAT, "format_version": STORE_FORMAT_VERSION, "dasv_version": __version__,
        "dtype": dtype, "n_utterances": n_utterances, "n_frames": n_frames, "content": content,
    }
    for name, value in recipe.items():  # one by one, for h5dump and other HDF5 readers
        if isinstance(value, (int, float, str)):
            attrs[name] = value
    attrs["recipe"] = json.dumps(recipe, sort_keys=True)  # what dasv reads: the exact round trip
    return attrs


def open_shard(path: Path, mode: str = "r") -> Any:
    """An h5py.File; a file HDF5 cannot open is an InputError naming it."""
    import h5py

    try:
        return h5py.File(path, mode)
    except OSError as exc:
        raise InputError(f"{path}: not a readable feature shard ({str(exc).splitlines()[0][:160]})") from exc


def check_shard(f: Any, path: Path) -> dict[str, Any]:
    """{"recipe", "dtype", "content"} of an open shard; InputError when it is not a dasv shard or was edited."""
    attrs = f.attrs
    if attrs.get("format") != STORE_FORMAT:
        raise InputError(f"{path}: not a dasv feature shard (no '{STORE_FORMAT}' format tag)")
    version = int(attrs.get("format_version", -1))
    if version > STORE_FORMAT_VERSION or version < 1:
        raise InputError(f"{path}: feature shard format version {version} is not supported by this dasv")
    content = shard_content(attrs)
    if content not in CONTENTS:
        raise InputError(f"{path}: feature shard content {content!r} is not supported by this dasv")
    for name in required(content):
        if name not in f:
            raise InputError(f"{path}: feature shard has no '{name}' dataset")
    try:
        recipe = json.loads(attrs["recipe"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: feature shard has no readable 'recipe' attribute ({exc})") from None
    # The recipe is stored twice (fields one by one, for h5dump/h5py readers, and as JSON, which dasv
    # uses); they differ only when a shard was edited by hand, and then neither can be trusted.
    edited = [f"{k}={plain(attrs[k])!r} but recipe says {v!r}" for k, v in sorted(recipe.items())
              if k in attrs and isinstance(v, (int, float, str)) and plain(attrs[k]) != v]
    if edited:
        raise InputError(f"{path}: its attributes disagree with its feature recipe ({'; '.join(edited[:3])}); "
                         f"the shard was edited or damaged: recompute it with `dasv features --overwrite`")
    return {"recipe": recipe, "dtype": str(attrs["dtype"]), "content": content}


def read_shard_header(path: str | Path) -> tuple[list[str], dict[str, Any]]:
    """(keys, {"recipe", "dtype"}) of one complete shard, reading only its small datasets."""
    path = Path(path)
    with open_shard(path) as f:
        info = check_shard(f, path)
        keys = [k for k in f["keys"].asstr()[()]]
    return keys, info


def recipe_differences(expected: dict[str, Any] | None, actual: dict[str, Any] | None) -> list[str]:
    """Recipe fields both dicts name with different values ('field: expected != actual')."""
    if not expected or not actual:
        return []
    return [f"{k}: {expected[k]!r} != {actual[k]!r}" for k in sorted(set(expected) & set(actual))
            if expected[k] != actual[k]]


def check_recipe(store_path: str | Path, store_recipe: dict[str, Any] | None,
                 expected: dict[str, Any] | None, expected_from: str) -> None:
    """Refuse a store whose features were made with another recipe than `expected_from` needs.

    A network sees only numbers: features with another hop, FFT size or mel range give it
    plausible-looking but meaningless embeddings, so this is an error, not a warning.
    """
    diff = recipe_differences(expected, store_recipe)
    if diff:
        more = f"; and {len(diff) - 4} more" if len(diff) > 4 else ""
        raise InputError(
            f"{store_path}: features were made with another recipe than {expected_from} "
            f"({'; '.join(diff[:4])}{more}); recompute them with the same `dasv features` settings"
        )
