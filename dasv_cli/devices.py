"""The one place a `--device` value becomes a torch device string (train, embed, validate, demo, bench)."""

from __future__ import annotations

from dasv_cli.errors import UsageError


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is usable, else 'cpu'; an unusable explicit choice is a UsageError."""
    import torch

    d = (device or "auto").strip().lower()
    if d == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if d.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: no CUDA GPU is available here (use --device cpu or auto)")
        try:
            index = torch.device(d).index
        except RuntimeError as exc:
            raise UsageError(f"--device {device}: {exc}") from None
        if index is not None and index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) here")
        return d
    if d == "cpu":
        return d
    if d == "mps" and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return d
    raise UsageError(f"--device {device}: expected cpu, cuda, cuda:N or auto")
