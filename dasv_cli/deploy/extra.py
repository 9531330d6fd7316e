"""The optional ONNX packages (`pip install "dasv[export]"`): imported only where export or the
onnxruntime extractor needs them, so the rest of dasv never does."""

from __future__ import annotations

from typing import Any

from dasv_cli.errors import DasvError

EXTRA_HINT = 'pip install "dasv[export]"'


def import_extra(name: str) -> Any:
    """The module `name` (onnx or onnxruntime), or a one-line DasvError naming the extra that brings it."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise DasvError(f"{name} is not installed: ONNX export and the onnxruntime extractor need the "
                        f"'export' extra ({EXTRA_HINT}); {exc.__class__.__name__}: {exc}") from None
