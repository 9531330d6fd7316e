"""Reading a feature store: FeatureStore (the index in memory, windows read from HDF5 on demand).

Callers see keys, lengths, windows and stats only. The index (key -> shard, row, offset, length) and
the HDF5 handles are private to this module (`_locate`, `_span`, `_file`), so the index can become
flat arrays and the handles a bounded cache without any caller changing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from dasv_cli.errors import InputError
from dasv_cli.io.paths import require_dir
from dasv_cli.io.store.layout import check_shard, list_shards, open_shard


class FeatureStore:
    """Read access to a feature store directory: index in memory, HDF5 opened lazily per process.

    Safe after fork (DataLoader workers): handles opened in another process are never reused.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        require_dir(self.path, "a feature store (a directory of shard-*.h5)", missing="no such feature store")
        self._shards = list_shards(self.path)
        if not self._shards:
            raise InputError(f"{self.path}: no feature shards (shard-*.h5); create them with `dasv features`")
        self._index: dict[str, tuple[int, int]] = {}  # key -> (shard, row)
        self._offsets: list[np.ndarray] = []  # per shard: first frame of each row
        self._lengths: list[np.ndarray] = []  # per shard: frames of each row
        self._keys: list[str] = []
        self._recipe: dict[str, Any] | None = None
        self._dtype: str | None = None
        for s, shard in enumerate(self._shards):
            self._add_shard(s, shard)
        self._files: dict[int, Any] = {}
        self._pid = os.getpid()

    def _add_shard(self, s: int, shard: Path) -> None:
        with open_shard(shard) as f:
            info = check_shard(f, shard)
            keys = f["keys"].asstr()[()]
            offsets = f["offsets"][()].astype(np.int64)
            lengths = f["lengths"][()].astype(np.int64)
        if self._recipe is None:
            self._recipe, self._dtype = info["recipe"], info["dtype"]
        elif info["recipe"] != self._recipe or info["dtype"] != self._dtype:
            raise InputError(
                f"{shard}: its feature recipe/dtype differs from {self._shards[0].name}; "
                f"a store must hold one recipe"
            )
        for row, key in enumerate(keys):
            if key in self._index:
                other = self._shards[self._index[key][0]].name
                raise InputError(f"{shard}: key {key!r} is also stored in {other}")
            self._index[key] = (s, row)
        self._keys.extend(keys)
        self._offsets.append(offsets)
        self._lengths.append(lengths)

    # -- process-local handles ------------------------------------------------------------------
    def _file(self, s: int) -> Any:
        if self._pid != os.getpid():  # forked: never touch the parent's HDF5 handles
            self._files = {}
            self._pid = os.getpid()
        f = self._files.get(s)
        if f is None:
            import h5py

            f = h5py.File(self._shards[s], "r", rdcc_nbytes=4 << 20)
            self._files[s] = f
        return f

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_files"] = {}
        return state

    def close(self) -> None:
        if self._pid == os.getpid():
            for f in self._files.values():
                try:
                    f.close()
                except Exception:
                    pass
        self._files = {}

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    # -- index ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def keys(self) -> list[str]:
        """Keys in stored order (shard by shard)."""
        return list(self._keys)

    @property
    def recipe(self) -> dict[str, Any]:
        """The feature recipe (LogMelConfig.to_dict() of the writer)."""
        return dict(self._recipe or {})

    @property
    def dtype(self) -> str:
        return self._dtype or "float32"

    @property
    def n_mels(self) -> int:
        return int(self.recipe.get("n_mels", 80))

    @property
    def shards(self) -> list[Path]:
        return list(self._shards)

    def _locate(self, key: str) -> tuple[int, int]:
        """(shard, row) of `key`."""
        try:
            return self._index[key]
        except KeyError:
            raise KeyError(f"{key!r} is not in the feature store {self.path}") from None

    def _span(self, s: int, row: int) -> tuple[int, int]:
        """(first frame in the shard's `feats`, frames) of a row."""
        return int(self._offsets[s][row]), int(self._lengths[s][row])

    def length(self, key: str) -> int:
        """Frames of utterance `key`."""
        return self._span(*self._locate(key))[1]

    def lengths(self) -> dict[str, int]:
        """{key: frames} for every utterance."""
        return {k: int(self._lengths[s][r]) for k, (s, r) in self._index.items()}

    def total_frames(self) -> int:
        return int(sum(int(x.sum()) for x in self._lengths))

    # -- data -------------------------------------------------------------------------------
    def __getitem__(self, key: str) -> np.ndarray:
        """The whole utterance, float32 [frames, n_mels] (raw log-mel, as stored)."""
        s, row = self._locate(key)
        off, n = self._span(s, row)
        return np.asarray(self._file(s)["feats"][off:off + n], dtype=np.float32)

    def window(self, key: str, start: int, frames: int) -> np.ndarray:
        """Frames [start, start + frames) of `key`, float32 [frames, n_mels]; reads only those chunks."""
        s, row = self._locate(key)
        off, n = self._span(s, row)
        start, frames = int(start), int(frames)
        if start < 0 or frames < 0 or start + frames > n:
            raise ValueError(f"{key!r}: window [{start}, {start + frames}) outside its {n} frames")
        return np.asarray(self._file(s)["feats"][off + start:off + start + frames], dtype=np.float32)

    def stats(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) over time of the whole utterance, float32 [n_mels] each."""
        s, row = self._locate(key)
        f = self._file(s)
        return (np.asarray(f["mean"][row], dtype=np.float32), np.asarray(f["std"][row], dtype=np.float32))

    def samples(self, key: str) -> int:
        """Samples of the source audio at the recipe's rate."""
        s, row = self._locate(key)
        return int(self._file(s)["samples"][row])

    def summary(self) -> dict[str, Any]:
        """Utterances, frames, hours of audio, shards, bytes, dtype and recipe of the store."""
        rate = float(self.recipe.get("sample_rate", 16000))
        total_samples = 0
        for s in range(len(self._shards)):
            total_samples += int(np.asarray(self._file(s)["samples"][()], dtype=np.int64).sum())
        size = sum(p.stat().st_size for p in self._shards)
        return {
            "path": str(self.path),
            "utterances": len(self),
            "frames": self.total_frames(),
            "hours": total_samples / rate / 3600.0,
            "shards": len(self._shards),
            "bytes": size,
            "dtype": self.dtype,
            "recipe": self.recipe,
        }
