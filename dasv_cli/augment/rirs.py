"""Room impulse responses by the image method (pyroomacoustics), rooms drawn as Kaldi's simulated RIRs.

Ko et al. (ICASSP 2017) simulated RIRS_NOISES' `simulated_rirs` with Habets' image-method generator
(Kaldi's prep_sim_rirs.sh): shoebox rooms whose length and width are uniform in 1-10 m (small),
10-30 m (medium) or 30-50 m (large), height uniform in 2-5 m, one absorption coefficient for every
wall uniform in 0.2-0.8, the microphone anywhere in the room and each source uniform in a 5 m ball
around it, inside the room (200 rooms x 100 RIRs per size). The same draws here, with two changes:
the reflection order follows the room's Sabine RT60 (the order whose images reach c x RT60, capped
at MAX_ORDER) instead of Kaldi's fixed 10, which cut the tail of small rooms short; and a source
keeps MIN_DISTANCE from the microphone (the image method is singular at distance 0).
Each RIR is cut where its remaining energy is 60 dB down (at most MAX_SECONDS after the direct
path) and scaled to a peak of 1 (reverb normalises the level anyway).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

ROOM_SIZES = {"smallroom": (1.0, 10.0), "mediumroom": (10.0, 30.0), "largeroom": (30.0, 50.0)}
HEIGHT = (2.0, 5.0)
ABSORPTION = (0.2, 0.8)
MAX_DISTANCE = 5.0  # speaker-microphone distance, m (Kaldi's SMD bound)
MIN_DISTANCE = 0.1
WALL_MARGIN = 0.05
SOUND_SPEED = 343.0  # m/s, pyroomacoustics' default
MAX_ORDER = 30
MAX_SECONDS = 2.0  # Kaldi's large-room RIR duration
TAIL_DB = 60.0


def sabine_rt60(dims: tuple[float, float, float], absorption: float) -> float:
    """Sabine's reverberation time (s) of a shoebox with one energy absorption coefficient."""
    x, y, z = dims
    volume, surface = x * y * z, 2.0 * (x * y + y * z + x * z)
    return 24.0 * math.log(10.0) * volume / (SOUND_SPEED * surface * absorption)


def order_for(dims: tuple[float, float, float], rt60: float) -> int:
    """The image order whose reflections reach c x rt60 in every direction (pyroomacoustics'
    inverse_sabine rule: the largest ball inside the diamond of image rooms)."""
    radii = [a * b / math.hypot(a, b) for a, b in ((dims[0], dims[1]), (dims[0], dims[2]), (dims[1], dims[2]))]
    return max(1, int(math.ceil(SOUND_SPEED * rt60 / min(radii) - 1)))


@dataclass(frozen=True)
class Room:
    """A shoebox: size class, dimensions (m), wall energy absorption, microphone position, image order."""

    size: str
    dims: tuple[float, float, float]
    absorption: float
    mic: tuple[float, float, float]
    max_order: int

    @property
    def rt60(self) -> float:
        return sabine_rt60(self.dims, self.absorption)


def _inside(rng: np.random.Generator, dims: tuple[float, float, float]) -> tuple[float, float, float]:
    lo = np.full(3, WALL_MARGIN)
    hi = np.asarray(dims) - WALL_MARGIN
    return tuple(float(v) for v in np.round(lo + rng.random(3) * (hi - lo), 2))


def draw_room(rng: np.random.Generator, size: str) -> Room:
    """A room of class `size` (smallroom, mediumroom, largeroom) drawn from Kaldi's ranges
    (dimensions and absorption rounded to 0.01, as Kaldi's generator does)."""
    if size not in ROOM_SIZES:
        raise ValueError(f"unknown room size {size!r} (choose from {', '.join(ROOM_SIZES)})")
    lo, hi = ROOM_SIZES[size]
    u = rng.random(4)
    dims = (round(float(lo + u[0] * (hi - lo)), 2), round(float(lo + u[1] * (hi - lo)), 2),
            round(float(HEIGHT[0] + u[2] * (HEIGHT[1] - HEIGHT[0])), 2))
    absorption = round(float(ABSORPTION[0] + u[3] * (ABSORPTION[1] - ABSORPTION[0])), 2)
    order = min(order_for(dims, sabine_rt60(dims, absorption)), MAX_ORDER)
    return Room(size, dims, absorption, _inside(rng, dims), order)


def room_for_rt60(dims: tuple[float, float, float], rt60: float, mic: tuple[float, float, float],
                  max_order: int | None = None) -> Room:
    """A room with the absorption that gives `rt60` by Sabine and the order that reaches it."""
    absorption = sabine_rt60(dims, 1.0) / rt60
    if not 0.0 < absorption <= 1.0:
        raise ValueError(f"no absorption gives RT60 {rt60} s in a {dims} m room")
    dims = tuple(float(v) for v in dims)
    return Room("custom", dims, absorption, tuple(float(v) for v in mic), max_order or order_for(dims, rt60))


def draw_source(rng: np.random.Generator, room: Room) -> tuple[float, float, float]:
    """A source uniform in the MAX_DISTANCE ball around the microphone, inside the room, at least
    MIN_DISTANCE from it (rejection sampling, as Kaldi's generator)."""
    mic = np.asarray(room.mic)
    lo, hi = np.full(3, WALL_MARGIN), np.asarray(room.dims) - WALL_MARGIN
    while True:
        n = 4096
        direction = rng.normal(size=(n, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        radius = MAX_DISTANCE * rng.random(n) ** (1.0 / 3.0)
        points = mic + direction * radius[:, None]
        ok = np.all((points >= lo) & (points <= hi), axis=1) & (radius >= MIN_DISTANCE)
        if ok.any():
            return tuple(float(v) for v in points[int(np.argmax(ok))])


def trim(rir: np.ndarray, rate: int) -> np.ndarray:
    """`rir` up to where the energy still to come is TAIL_DB below the total, at most MAX_SECONDS
    after the direct path, scaled to a peak of 1; float32."""
    h = np.asarray(rir, dtype=np.float64)
    peak = int(np.argmax(np.abs(h)))
    h = h[: peak + int(MAX_SECONDS * rate) + 1]
    remaining = np.cumsum((h * h)[::-1])[::-1]
    below = np.flatnonzero(remaining < remaining[0] * 10.0 ** (-TAIL_DB / 10.0))
    if below.size:
        h = h[: max(int(below[0]), peak + 1)]
    return (h / np.max(np.abs(h))).astype(np.float32)


def simulate(room: Room, source: tuple[float, float, float], rate: int = 16000) -> np.ndarray:
    """The RIR from `source` to the room's microphone (image method), trimmed; float32."""
    import pyroomacoustics as pra

    # One thread: pyroomacoustics sizes its fractional-delay pool from os.cpu_count() (it misreads
    # OMP_NUM_THREADS), and its threaded sum makes the bytes depend on the machine and on timing.
    pra.constants.set("num_threads", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shoebox = pra.ShoeBox(list(room.dims), fs=rate, materials=pra.Material(room.absorption),
                              max_order=room.max_order, air_absorption=False, ray_tracing=False)
        shoebox.add_source(list(source))
        shoebox.add_microphone(list(room.mic))
        shoebox.compute_rir()
    return trim(np.asarray(shoebox.rir[0][0]), rate)
