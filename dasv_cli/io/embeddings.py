"""Embedding tables: one vector per utterance key, in HDF5 (the default) or as text lines.

HDF5 layout (one file):
    keys     variable-length UTF-8 strings [n]
    vectors  float32 [n, dim]
    attrs    format="dasv-embeddings", version, dasv_version, checkpoint (path as given),
             checkpoint_sha256, norm, dim, plus whatever the writer adds (model step, ...)
Text form: `key v1 v2 ... vdim` per line (what `dasv embed -o -` prints; TAB-separated when the key
holds spaces, io.lists.join_fields); readable back, so a table can go through a pipe. `export_npy` writes `vectors` as .npy with the keys beside it.

Writes are atomic (temporary file + rename): an interrupted run leaves the previous table intact,
and a rerun appends only the keys the table does not hold yet.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable, Sequence

import numpy as np

from dasv_cli.errors import InputError, where
from dasv_cli.io.atomic import GuardedFile, atomic_path, write_text_atomic
from dasv_cli.io.paths import require_file
from dasv_cli.io.plain import plain

TABLE_FORMAT = "dasv-embeddings"
TABLE_VERSION = 1
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


@dataclass
class Embeddings:
    """Keys and their vectors (float32 [n, dim]) with the attributes that name where they came from."""

    keys: list[str]
    vectors: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)
    _index: dict[str, int] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.keys):
            raise ValueError(f"vectors must be [n={len(self.keys)}, dim], got {self.vectors.shape}")

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: object) -> bool:
        return key in self.index

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def index(self) -> dict[str, int]:
        """key -> row (built once)."""
        if self._index is None:
            self._index = {k: i for i, k in enumerate(self.keys)}
        return self._index

    def get(self, key: str) -> np.ndarray:
        return self.vectors[self.index[key]]

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The keys (in the order given, each once) that this table does not hold."""
        idx = self.index
        return [k for k in dict.fromkeys(keys) if k not in idx]

    def merged(self, keys: Sequence[str], vectors: np.ndarray) -> "Embeddings":
        """A new table with these rows appended; keys already present are kept as they were."""
        if not len(keys):
            return self
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(keys):
            raise ValueError(f"vectors must be [n={len(keys)}, dim], got {vectors.shape}")
        if len(self) and vectors.shape[1] != self.dim:
            raise InputError(f"cannot append {vectors.shape[1]}-dimensional vectors to a {self.dim}-dimensional table")
        idx = self.index
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k not in idx:
                first.setdefault(k, i)
        keep = list(first.values())
        new_keys = self.keys + [keys[i] for i in keep]
        if not len(self):
            new_vectors = vectors[keep]
        else:
            new_vectors = np.concatenate([self.vectors, vectors[keep]], axis=0)
        return Embeddings(new_keys, new_vectors, dict(self.attrs))


def empty(dim: int = 0, attrs: dict[str, Any] | None = None) -> Embeddings:
    return Embeddings([], np.zeros((0, dim), dtype=np.float32), dict(attrs or {}))


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """Content hash that names a checkpoint in a table, so embeddings from two models never mix."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def model_identity(path: str | Path) -> dict[str, str]:
    """{"checkpoint": absolute path, "checkpoint_sha256": content hash}: how a table, a speakers file,
    a scores file and a calibration name the model they belong to."""
    p = Path(path)
    return {"checkpoint": str(p.resolve()), "checkpoint_sha256": file_sha256(p)}


def is_hdf5(path: str | Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == HDF5_SIGNATURE
    except OSError:
        return False


def read_embeddings(path: str | Path) -> Embeddings:
    """An embedding table from HDF5, or from text lines (`key v1 v2 ...`; `-` reads stdin)."""
    if str(path) != "-":
        p = require_file(Path(path), "an embedding table", "no such embedding table (make one with `dasv embed`)")
        if is_hdf5(p):
            return _read_hdf5(p)
    return _read_text(path)


def _read_hdf5(path: Path) -> Embeddings:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "keys" not in f or "vectors" not in f:
                raise InputError(f"{path}: not an embedding table (no 'keys' and 'vectors' datasets)")
            keys = [k.decode("utf-8") if isinstance(k, bytes) else str(k) for k in f["keys"][()]]
            vectors = np.asarray(f["vectors"][()], dtype=np.float32)
            attrs = {k: plain(v) for k, v in f.attrs.items()}
    except OSError as exc:
        raise InputError(f"{path}: cannot read the embedding table ({exc})") from exc
    if vectors.ndim != 2 or vectors.shape[0] != len(keys):
        raise InputError(f"{path}: {len(keys)} keys but vectors of shape {vectors.shape}")
    return Embeddings(keys, vectors, attrs)


def _read_text(src: str | Path) -> Embeddings:
    from dasv_cli.io.lists import iter_fields

    keys: list[str] = []
    rows: list[np.ndarray] = []
    dim: int | None = None
    seen: dict[str, int] = {}
    for name, number, fields in iter_fields(src):
        # The key is the first field (TAB-separated from the numbers when it holds spaces); the rest
        # are numbers, however they are separated.
        fields = fields[:1] + [v for f in fields[1:] for v in f.split()]
        if dim is None:
            dim = len(fields) - 1
            if dim < 1:
                raise InputError(f"{where(name, number)}: expected 'key v1 v2 ...', got one field")
        if len(fields) != dim + 1:
            raise InputError(f"{where(name, number)}: expected a key and {dim} numbers, got {len(fields)} fields")
        try:
            row = np.array(fields[1:], dtype=np.float32)
        except ValueError as exc:
            raise InputError(f"{where(name, number)}: not numbers after the key ({exc})") from exc
        key = fields[0]
        if key in seen:
            raise InputError(f"{where(name, number)}: duplicate key {key!r} (first at line {seen[key]})")
        seen[key] = number
        keys.append(key)
        rows.append(row)
    if not keys:
        raise InputError(f"{src}: the embedding table is empty")
    return Embeddings(keys, np.stack(rows), {"format": "text"})


def write_embeddings(path: str | Path, table: Embeddings, attrs: dict[str, Any] | None = None) -> None:
    """Write `table` as HDF5 at `path` atomically (temporary file in the same folder, then rename)."""
    import h5py

    from dasv_cli import __version__

    path = Path(path)
    all_attrs: dict[str, Any] = dict(table.attrs)
    all_attrs.update(attrs or {})
    all_attrs.update({"format": TABLE_FORMAT, "version": TABLE_VERSION, "dasv_version": __version__,
                      "dim": table.dim})
    with atomic_path(path, "embeddings") as tmp:
        # Through GuardedFile: HDF5 never sees a failed write (a full disk would otherwise leave the
        # library in a state that crashes the interpreter); the first OSError is raised here instead.
        guard = GuardedFile(tmp)
        try:
            with h5py.File(guard, "w") as f:
                f.create_dataset("keys", data=np.array(table.keys, dtype=object),
                                 dtype=h5py.string_dtype("utf-8"))
                f.create_dataset("vectors", data=table.vectors.astype(np.float32, copy=False))
                for k, v in all_attrs.items():
                    if v is None:
                        continue
                    f.attrs[k] = v
            guard.flush()
            if guard.error is None:
                os.fsync(guard.fh.fileno())
        finally:
            guard.close()
        if guard.error is not None:
            raise guard.error


def format_text_lines(keys: Sequence[str], vectors: np.ndarray) -> str:
    """`key v1 v2 ...` lines; 9 significant digits keep float32 values exact when read back."""
    out = []
    for key, vec in zip(keys, np.asarray(vectors, dtype=np.float32)):
        sep = "\t" if any(c.isspace() for c in key) else " "  # a TAB line splits on TABs only (io.lists)
        out.append(key + sep + " ".join(f"{float(x):.9g}" for x in vec) + "\n")
    return "".join(out)


def write_text(stream: IO[str] | None, keys: Sequence[str], vectors: np.ndarray) -> None:
    """Text lines to a stream (stdout when None)."""
    (stream or sys.stdout).write(format_text_lines(keys, vectors))


def write_text_file(path: str | Path, keys: Sequence[str], vectors: np.ndarray) -> None:
    """The text form written atomically to `path` (never half a table)."""
    write_text_atomic(path, "embeddings", lambda fh: fh.write(format_text_lines(keys, vectors)))


def export_npy(table: Embeddings, path: str | Path) -> tuple[Path, Path]:
    """`vectors` as `PATH` (.npy, float32 [n, dim]) and the keys, one per line, as `PATH.keys.txt`;
    each file written atomically."""
    path = Path(path)
    if path.suffix != ".npy":
        path = path.with_suffix(path.suffix + ".npy") if path.suffix else path.with_suffix(".npy")
    keys_path = path.with_name(path.name[: -len(".npy")] + ".keys.txt")
    with atomic_path(path, "embeddings") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, table.vectors.astype(np.float32, copy=False))
    write_text_atomic(keys_path, "embedding keys", lambda fh: fh.write("".join(k + "\n" for k in table.keys)))
    return path, keys_path
