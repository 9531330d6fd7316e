"""Babble: 3-7 other utterances of the list, each at its own 13-20 dB SNR against the speech.

Kaldi's x-vector recipe builds babble from MUSAN speech, adding each talker at a drawn SNR; here the
talkers are other utterances of the list being augmented (the pool), never the utterance itself, so
no extra corpus is needed. Each talker is cropped or repeated to the utterance's length from its
planned offset, as a noise is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from dasv_cli.augment.mix import add_at_snrs, fit_length
from dasv_cli.augment.sources import Loader


class BabblePool:
    """The utterances babble draws from: (key, path) pairs in list order, decoded on demand."""

    def __init__(self, entries: Sequence[tuple[str, str | Path]], rate: int) -> None:
        self.keys = [str(k) for k, _ in entries]
        self.paths = [Path(p) for _, p in entries]
        self.loader = Loader(rate, "babble utterance")
        self._index: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def index_of(self, key: str) -> int | None:
        """The position of `key` in the pool (None when the augmented utterance is not in it)."""
        if self._index is None:
            self._index = {k: i for i, k in enumerate(self.keys)}
        return self._index.get(key)

    def load(self, index: int) -> tuple[Path, np.ndarray]:
        path = self.paths[index]
        return path, self.loader.load(path)


def add_babble(speech: np.ndarray, talkers: Sequence[np.ndarray], snrs: Sequence[float],
               offsets: Sequence[float]) -> np.ndarray:
    """speech + every talker (fitted to its length from its offset) at its SNR; float64 out."""
    n = len(speech)
    fitted = [fit_length(np.asarray(t), n, o) for t, o in zip(talkers, offsets)]
    return add_at_snrs(speech, fitted, snrs)
