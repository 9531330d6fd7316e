"""DET plots (miss vs false-alarm probability on normal-deviate axes) with the EER point marked.

matplotlib is imported only when a plot is drawn, with the Agg backend, so no display is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dasv_cli.errors import DasvError, os_error_message

if TYPE_CHECKING:  # pragma: no cover
    from dasv_cli.eval.metrics import DetCurve, Metrics

_TICKS = [0.00001, 0.0001, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.99]
_TOP = 0.99  # upper axis limit (probability)


def probit(p: np.ndarray, lo: float = 1e-6, hi: float = 1 - 1e-6) -> np.ndarray:
    """Normal deviate of a probability (the DET axis scale), clipped to [lo, hi] so 0 and 1 stay drawable."""
    from scipy.special import ndtri

    return ndtri(np.clip(np.asarray(p, dtype=np.float64), lo, hi))


def lower_limit(det: "DetCurve") -> float:
    """Lowest probability on the axes: 0.1 %, or lower when the list is big enough to resolve it
    (half the smallest non-zero rate), so that operating points with no errors sit on the edge."""
    p = np.concatenate([det.p_fa, det.p_miss])
    positive = p[p > 0]
    smallest = float(positive.min()) if positive.size else 1e-3
    return float(np.clip(0.5 * smallest, 1e-5, 1e-3))


def thin(x: np.ndarray, y: np.ndarray, cells: int = 2000) -> np.ndarray:
    """Indices of the points to draw: the first of each occupied cell of a cells x cells grid, plus the
    last point. The curve is monotone, so this keeps its shape with at most ~2 * cells points."""
    if x.size <= 2 * cells:
        return np.arange(x.size)
    lo_x, hi_x = x.min(), x.max()
    lo_y, hi_y = y.min(), y.max()
    cx = ((x - lo_x) / max(hi_x - lo_x, 1e-12) * (cells - 1)).astype(np.int64)
    cy = ((y - lo_y) / max(hi_y - lo_y, 1e-12) * (cells - 1)).astype(np.int64)
    cell = cx * cells + cy
    change = np.flatnonzero(np.diff(cell) != 0) + 1
    return np.unique(np.concatenate(([0], change, [x.size - 1])))


def plot_det(det: "DetCurve", path: str | Path, metrics: "Metrics | None" = None,
             title: str | None = None, label: str | None = None) -> Path:
    """Draw the DET curve to `path` (PNG, or any format matplotlib knows by extension)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    path = Path(path)
    lo = lower_limit(det)
    x = probit(det.p_fa, lo, _TOP)
    y = probit(det.p_miss, lo, _TOP)
    keep = thin(x, y)
    fig, ax = plt.subplots(figsize=(6, 6), dpi=110)
    try:
        ax.plot(x[keep], y[keep], lw=1.6, color="tab:blue", label=label or "DET")
        lim = probit(np.array([lo, _TOP]), lo, _TOP)
        ax.plot(lim, lim, ls=":", lw=0.8, color="grey")
        if metrics is not None:
            e = probit(np.array([metrics.eer / 100.0]), lo, _TOP)[0]
            ax.plot([e], [e], "o", ms=7, color="tab:red",
                    label=f"EER {metrics.eer:.2f}% (threshold {metrics.eer_threshold:.3f})")
            # The minDCF@0.01 operating point, for orientation.
            i = int(np.searchsorted(det.thresholds, metrics.min_dcf_p01_threshold))
            i = min(i, det.thresholds.size - 1)
            ax.plot([x[i]], [y[i]], "s", ms=6, color="tab:green",
                    label=f"minDCF@0.01 {metrics.min_dcf_p01:.3f}")
        shown = [t for t in _TICKS if t >= lo * 0.999]
        # Keep tick labels apart: drop a tick closer than 0.24 normal deviates to the previous one.
        kept: list[float] = []
        for t in shown:
            if not kept or probit(np.array([t]))[0] - probit(np.array([kept[-1]]))[0] >= 0.24:
                kept.append(t)
        ticks = probit(np.array(kept))
        names = [f"{100 * t:g}" for t in kept]
        ax.set_xticks(ticks, names)
        ax.set_yticks(ticks, names)
        ax.set_xlim(lim)
        ax.set_ylim(lim)
        ax.set_xlabel("false-alarm probability (%)")
        ax.set_ylabel("miss probability (%)")
        trials = f" ({metrics.trials:,} trials)" if metrics is not None else ""
        ax.set_title(title or f"DET curve{trials}")
        ax.grid(True, ls="--", lw=0.5, alpha=0.6)
        ax.legend(loc="upper right", fontsize=9)
        fig.tight_layout()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path)
        except OSError as exc:
            raise DasvError(f"cannot write the DET plot {os_error_message(exc, path)}") from exc
        except ValueError as exc:  # unknown extension
            raise DasvError(f"{path}: cannot draw the DET plot ({exc})") from exc
    finally:
        plt.close(fig)
    return path
