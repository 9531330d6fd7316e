"""What a validation result means for the run: improve, halve the learning rate, or stop. Pure.

Like the original tool (miquelindia90/DoubleMHA, scripts/train.py), the run counts validations without
gain; unlike it, the decision is made right after each validation rather than at epoch ends (the
original checked `(stopping + 1) % 15 == 0` once per epoch, so the LR was halved when 14 validations
had passed without gain, and again at every further epoch end while that count stood; with
VoxCeleb2's epochs shorter than a validation interval that halved several times in a row). Here the
LR is halved each time the count reaches a multiple of `lr_patience` (15), for every optimizer (the
original skipped RMSprop), and the run stops once the count exceeds `early_stopping` (25), the
original's `stopping > early_stopping` test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Plateau:
    """The run's standing after one validation."""

    best_eer: float | None  # the best EER so far (this one when it improved)
    stopping: int  # validations in a row without gain
    improved: bool  # this EER is the best so far: keep this model as best.pt
    halve: bool  # halve the learning rate now


def exhausted(stopping: int, early_stopping: int) -> bool:
    """Stop: more than `early_stopping` validations passed without gain (-1: never). The loop asks
    after every update, so a resumed run whose count already exceeds the limit stops at once."""
    return early_stopping >= 0 and stopping > early_stopping


def judge(eer: float, best_eer: float | None, stopping: int, lr_patience: int) -> Plateau:
    """Improve or halve, for a new validation `eer` given the best EER and the count so far.

    A non-finite EER never improves; `lr_patience` 0 never halves.
    """
    improved = math.isfinite(eer) and (best_eer is None or eer < best_eer)
    if improved:
        best_eer, stopping = eer, 0
    else:
        stopping += 1
    halve = not improved and lr_patience > 0 and stopping % lr_patience == 0
    return Plateau(best_eer=best_eer, stopping=stopping, improved=improved, halve=halve)


__all__ = ["Plateau", "judge", "exhausted"]
