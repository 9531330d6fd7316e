"""Values from HDF5 attrs, numpy and pickled settings as plain Python.

Checkpoints load with `torch.load(weights_only=True)`, which accepts only plain containers, numbers
and strings; HDF5 attributes come back as numpy scalars and bytes. Everything that stores such values
passes them through `plain` first, so a checkpoint or config never carries a numpy object.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def plain(value: Any) -> Any:
    """numpy scalars/arrays -> Python numbers/lists, bytes -> str, recursively through dicts, lists and tuples."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value
