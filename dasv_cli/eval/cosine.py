"""Cosine similarity of trial pairs from unit-length rows: each vector normalised once, the pairs
gathered by row index and scored in vectorised chunks (no per-trial Python arithmetic)."""

from __future__ import annotations

import numpy as np

# Norms below this are clamped, as torch.nn.functional.cosine_similarity does (eps=1e-8): an all-zero
# vector scores 0 against everything instead of NaN.
EPS = 1e-8
_CHUNK = 1 << 16


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); zero rows stay zero."""
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(norms, EPS)


def cosine_pairs(unit: np.ndarray, i1: np.ndarray, i2: np.ndarray, chunk: int = _CHUNK) -> np.ndarray:
    """Dot products of already unit-length rows i1[k], i2[k] (float64 [n])."""
    out = np.empty(i1.size, dtype=np.float64)
    for start in range(0, i1.size, chunk):
        a = unit[i1[start:start + chunk]]
        b = unit[i2[start:start + chunk]]
        out[start:start + chunk] = np.einsum("ij,ij->i", a, b, dtype=np.float64)
    return out
