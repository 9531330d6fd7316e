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

and attrs: format, format_version, dasv_version, dtype, the recipe's fields one by one (sample_rate,
n_mels, n_fft, win_length, hop_length, window, preemphasis, scale, fmin, fmax, mel_scale, log_floor,
...) and `recipe` (the same as JSON, the exact round trip).

A shard is written under a temporary name (`.shard-NNNNN.h5.XXXXXX.tmp`, io.atomic), fsynced and
renamed when complete, so a complete-looking shard is always complete; readers ignore temporary
files. `DIR/failed.tsv` lists inputs that failed (path, reason) and `DIR/.dasv-features.lock` keeps
a second writer out.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from dasv_cli.errors import InputError
from dasv_cli.io.plain import plain

STORE_FORMAT = "dasv-features"
STORE_FORMAT_VERSION = 1
SHARD_RE = re.compile(r"^shard-(\d{5,})\.h5$")
FAILED_NAME = "failed.tsv"
# io.atomic's temporary names (`.shard-00003.h5.k2j_x9.tmp`, `.failed.tsv.k2j_x9.tmp`); also the
# fixed `.shard-00003.h5.tmp` of earlier versions, so a run they left killed is cleaned up too
TMP_RE = re.compile(r"^\.(?:shard-\d{5,}\.h5|failed\.tsv)(?:\.[A-Za-z0-9_]+)?\.tmp$")
LOCK_NAME = ".dasv-features.lock"
DTYPES = ("float32", "float16")
DEFAULT_SHARD_FRAMES = 250_000  # ~42 min of audio, ~80 MB as float32; a crash loses at most one
DEFAULT_CHUNK_FRAMES = 128
REQUIRED = ("feats", "keys", "offsets", "lengths", "mean", "std")


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.h5"


def list_shards(directory: str | Path) -> list[Path]:
    """Complete shards in `directory`, in index order (temporary files are not shards)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = []
    for entry in os.scandir(d):
        m = SHARD_RE.match(entry.name)
        if m and entry.is_file():
            found.append((int(m.group(1)), Path(entry.path)))
    return [p for _, p in sorted(found)]


def list_temporary(directory: str | Path) -> list[Path]:
    """Temporary files (shards, failed.tsv) left by an interrupted writer."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted(Path(e.path) for e in os.scandir(d) if TMP_RE.match(e.name))


def shard_index(path: Path) -> int:
    m = SHARD_RE.match(path.name)
    if not m:
        raise ValueError(f"not a shard name: {path.name}")
    return int(m.group(1))


def shard_attrs(recipe: dict[str, Any], dtype: str, n_utterances: int, n_frames: int) -> dict[str, Any]:
    """The attrs a complete shard carries (check_shard reads them back)."""
    from dasv_cli import __version__

    attrs: dict[str, Any] = {
        "format": STORE_FORMAT, "format_version": STORE_FORMAT_VERSION, "dasv_version": __version__,
        "dtype": dtype, "n_utterances": n_utterances, "n_frames": n_frames,
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
    """{"recipe", "dtype"} of an open shard; InputError when it is not a dasv shard or was edited."""
    attrs = f.attrs
    if attrs.get("format") != STORE_FORMAT:
        raise InputError(f"{path}: not a dasv feature shard (no '{STORE_FORMAT}' format tag)")
    version = int(attrs.get("format_version", -1))
    if version > STORE_FORMAT_VERSION or version < 1:
        raise InputError(f"{path}: feature shard format version {version} is not supported by this dasv")
    for name in REQUIRED:
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
    return {"recipe": recipe, "dtype": str(attrs["dtype"])}


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
