"""Quality measures for quality-aware calibration (WeSpeaker's QMF, Thienpondt et al. 2020).

The one measure so far is the duration of the two utterances of a trial: short utterances give less
reliable scores, so a calibration that sees the durations can trust their scores less. Per trial the
inputs are the log of the shorter and of the longer duration, each capped at `max_duration` seconds
(WeSpeaker caps at 20 s, beyond which more speech changes little). WeSpeaker feeds min, max,
max - min and max / min of the capped durations in seconds; in the log domain the ratio is already
the difference of the two features, so these two span what a log-duration model can use.

Durations come from a feature store (frames x hop: the speech the network saw) or from a Kaldi-style
`utt2dur` file (`key seconds`); the calibration JSON records which, and the same source kind should
be given when the calibration is applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from dasv_cli.errors import InputError, UsageError

QUALITY_MEASURES = ("duration",)
DURATION_FEATURES = ("log_min_duration", "log_max_duration")
DEFAULT_MAX_DURATION = 20.0


@dataclass
class Quality:
    """Which quality measure a calibration uses and how its inputs are formed."""

    measure: str = "duration"
    max_duration: float = DEFAULT_MAX_DURATION
    source: str | None = None  # where the durations came from when it was fitted (informative)

    def __post_init__(self) -> None:
        if self.measure not in QUALITY_MEASURES:
            raise UsageError(f"unknown quality measure {self.measure!r}; choose one of {', '.join(QUALITY_MEASURES)}")
        if not self.max_duration > 0:
            raise UsageError(f"--max-duration must be positive seconds, got {self.max_duration}")

    @property
    def features(self) -> tuple[str, ...]:
        return DURATION_FEATURES

    def to_dict(self) -> dict[str, object]:
        return {"measure": self.measure, "features": list(self.features), "max_duration": self.max_duration,
                "source": self.source}


def duration_quality(key1: Sequence[str], key2: Sequence[str], durations: Mapping[str, float],
                     max_duration: float = DEFAULT_MAX_DURATION, source: str = "the durations") -> np.ndarray:
    """[n, 2] float64: log of the shorter and of the longer (capped) duration of each trial's pair."""
    missing = list(dict.fromkeys(k for k in (*key1, *key2) if k not in durations))
    if missing:
        shown = ", ".join(missing[:10]) + (f", ... ({len(missing) - 10} more)" if len(missing) > 10 else "")
        raise InputError(f"{len(missing)} trial key(s) have no duration in {source}: {shown}")
    d1 = np.fromiter((durations[k] for k in key1), dtype=np.float64, count=len(key1))
    d2 = np.fromiter((durations[k] for k in key2), dtype=np.float64, count=len(key2))
    bad = np.flatnonzero(~(np.isfinite(d1) & np.isfinite(d2) & (d1 > 0) & (d2 > 0)))
    if bad.size:
        i = int(bad[0])
        raise InputError(f"{source}: durations must be positive seconds; trial {i + 1} "
                         f"({key1[i]}, {key2[i]}) has {d1[i]:g} and {d2[i]:g}")
    d1 = np.minimum(d1, max_duration)
    d2 = np.minimum(d2, max_duration)
    return np.log(np.stack([np.minimum(d1, d2), np.maximum(d1, d2)], axis=1))


def load_durations(features: str | Path | None = None, durations: str | Path | None = None) -> tuple[dict[str, float], str]:
    """({key: seconds}, source description) from exactly one of a feature store or a durations file."""
    if (features is None) == (durations is None):
        raise UsageError("the duration quality measure needs durations: give --features DIR or --durations FILE (one)")
    if features is not None:
        from dasv_cli.io.durations import store_durations

        return store_durations(features), f"feature store {features}"
    from dasv_cli.io.durations import read_durations

    return read_durations(durations), f"durations file {durations}"


def trial_quality(quality: Quality, key1: Sequence[str], key2: Sequence[str], *,
                  features: str | Path | None = None, durations: str | Path | None = None) -> np.ndarray:
    """The quality inputs [n, k] of trials, durations read from `features` or `durations`."""
    table, source = load_durations(features, durations)
    return duration_quality(key1, key2, table, quality.max_duration, source)
