"""What a run reports: OUT/metrics.jsonl (one JSON line per report), TensorBoard scalars in OUT/tb,
and the running loss/accuracy window behind the progress line and the periodic reports.

Only rank 0 writes; the other ranks hold a closed log, whose writes do nothing. A resumed run first
drops the lines past the checkpoint's step, so metrics.jsonl never repeats a step.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from dasv_cli import progress

METRICS = "metrics.jsonl"
VALID_METRICS = ("eer", "min_dcf_p01", "min_dcf_p05")


def _trim(path: Path, step: int) -> None:
    """Keep the records of steps up to `step` (what the resumed checkpoint has seen)."""
    kept = []
    for line in path.read_text().splitlines():
        try:
            if int(json.loads(line).get("step", 0)) <= step:
                kept.append(line)
        except (ValueError, AttributeError):
            continue
    path.write_text("".join(x + "\n" for x in kept))


class RunLog:
    """metrics.jsonl plus TensorBoard; `RunLog()` is the closed log of a rank that does not write."""

    def __init__(self) -> None:
        self.metrics_fh = None
        self.tb = None

    @classmethod
    def open(cls, out: Path, step: int, resume: bool) -> "RunLog":
        """Open OUT's logs for appending (after trimming them back to `step` when resuming)."""
        log = cls()
        out.mkdir(parents=True, exist_ok=True)
        path = out / METRICS
        if resume and path.exists():
            _trim(path, step)
        log.metrics_fh = path.open("a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter

            log.tb = SummaryWriter(str(out / "tb"), purge_step=step + 1 if resume else None)
        except ImportError:  # pragma: no cover - tensorboard is a dependency
            progress.warn("tensorboard is not installed: no OUT/tb scalars")
        return log

    def record(self, record: dict) -> None:
        """One metrics.jsonl line; each number also as a TensorBoard scalar (valid/... or train/...)."""
        if self.metrics_fh is not None:
            self.metrics_fh.write(json.dumps(record) + "\n")
            self.metrics_fh.flush()
        if self.tb is not None:
            step = record["step"]
            for name, value in record.items():
                if name in ("step", "epoch") or value is None:
                    continue
                self.tb.add_scalar(f"{'valid' if name in VALID_METRICS else 'train'}/{name}", value, step)
            self.tb.flush()

    def scalar(self, name: str, value: float, step: int) -> None:
        """A TensorBoard scalar only (metrics.jsonl carries the same count in its loss lines)."""
        if self.tb is not None:
            self.tb.add_scalar(name, value, step)

    def close(self) -> None:
        if self.metrics_fh is not None:
            self.metrics_fh.close()
            self.metrics_fh = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None


@dataclass
class Window:
    """Sums over the good batches since the last report (this rank's share)."""

    loss: float = 0.0
    correct: float = 0.0
    count: float = 0.0
    batches: float = 0.0
    samples: int = 0
    t0: float = field(default_factory=time.time)
    _last_info: str = ""

    def add(self, loss: float, correct: float, n: int) -> None:
        self.loss += loss
        self.correct += correct
        self.count += n
        self.batches += 1
        self.samples += n

    def sums(self) -> list[float]:
        """loss, correct, count, batches, samples: what the ranks add up for a report."""
        return [self.loss, self.correct, self.count, self.batches, float(self.samples)]

    def pause(self, seconds: float) -> None:
        """Leave `seconds` (a validation) out of the samples/s."""
        self.t0 += seconds

    def reset(self) -> None:
        self.loss = self.correct = self.count = self.batches = 0.0
        self.samples = 0
        self.t0 = time.time()

    def info(self, world: int, last_eer: float | None) -> str:
        """The progress line: loss, accuracy, samples/s over all ranks (the last report's just after
        one), then the latest EER (never the one before it: a validation follows a report)."""
        if self.batches:  # right after a report the window is empty: keep showing its figures
            elapsed = max(time.time() - self.t0, 1e-9)
            sps = self.samples * world / elapsed
            self._last_info = (f"loss {self.loss / self.batches:.3f}  acc {100 * self.correct / max(self.count, 1):.1f}%  "
                               f"{sps:.0f} samples/s")
        eer = f"  EER {last_eer:.2f}%" if last_eer is not None else ""
        return self._last_info + eer


__all__ = ["METRICS", "RunLog", "Window"]
