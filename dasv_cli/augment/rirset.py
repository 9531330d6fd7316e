"""`dasv rirs`: N simulated RIRs written as RIRS_NOISES' `simulated_rirs` tree, resumably.

Layout (Kaldi's): `DIR/simulated_rirs/{smallroom,mediumroom,largeroom}/RoomNNN/RoomNNN-MMMMM.wav`
(32-bit PCM WAV at the rate), and per size a Kaldi `rir_list` (`--rir-id small-Room001-00001 --room-id
small-Room001 DIRNAME/simulated_rirs/smallroom/Room001/Room001-00001.wav`, paths relative to DIR's
parent as Kaldi's are to RIRS_NOISES' parent) and a `room_info` (room, dimensions, microphone,
absorption as Kaldi's, then the Sabine RT60 and the image order). RIR i goes to size i mod 3, so
any N spreads evenly; `per_room` RIRs share a room (Kaldi: 100).
Every number comes from (seed, size, room, rir) through a stable hash, so RIR i is the same file
whatever N, order or interruption: a rerun skips the files present and writes the rest. Each file
is written atomically; Ctrl-C or SIGTERM discards the one in progress. DIR/dasv-rirs.json records
seed, rate and recipe, and a rerun with others is refused (one tree, one recipe).
"""

from __future__ import annotations

import json
import signal
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from dasv_cli.augment import rirs
from dasv_cli.augment.plan import stable_seed
from dasv_cli.augment.sources import SIMULATED
from dasv_cli.errors import InputError, UsageError
from dasv_cli.io.atomic import atomic_path, write_text_atomic
from dasv_cli.io.lock import DirectoryLock
from dasv_cli.io.paths import create_dir

SIZES = tuple(rirs.ROOM_SIZES)
ID_PREFIX = {"smallroom": "small", "mediumroom": "medium", "largeroom": "large"}
MANIFEST = "dasv-rirs.json"
LOCK = ".dasv-rirs.lock"
FORMAT = "dasv-rirs"


@dataclass(frozen=True)
class Slot:
    """RIR number `index` of the tree: its room size, room number and number within the room."""

    index: int
    size: str
    room: int
    rir: int

    @property
    def rel(self) -> str:
        return f"{SIMULATED}/{self.size}/Room{self.room:03d}/Room{self.room:03d}-{self.rir:05d}.wav"

    @property
    def room_id(self) -> str:
        return f"{ID_PREFIX[self.size]}-Room{self.room:03d}"

    @property
    def rir_id(self) -> str:
        return f"{self.room_id}-{self.rir:05d}"


def slots(count: int, per_room: int) -> list[Slot]:
    """The first `count` RIRs: sizes in turn, `per_room` RIRs to a room."""
    out = []
    for i in range(count):
        j = i // len(SIZES)
        out.append(Slot(i, SIZES[i % len(SIZES)], j // per_room + 1, j % per_room + 1))
    return out


def room_of(seed: int, size: str, room: int) -> rirs.Room:
    return rirs.draw_room(np.random.default_rng(stable_seed("dasv-rirs", seed, size, room)), size)


def source_of(seed: int, slot: Slot, room: rirs.Room) -> tuple[float, float, float]:
    rng = np.random.default_rng(stable_seed("dasv-rirs", seed, slot.size, slot.room, slot.rir))
    return rirs.draw_source(rng, room)


@dataclass
class RirsResult:
    output: str
    count: int
    written: int
    skipped: int
    seconds: float
    lists: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _recipe() -> dict:
    return {"room_sizes": {k: list(v) for k, v in rirs.ROOM_SIZES.items()}, "height": list(rirs.HEIGHT),
            "absorption": list(rirs.ABSORPTION), "max_distance": rirs.MAX_DISTANCE,
            "min_distance": rirs.MIN_DISTANCE, "max_order": rirs.MAX_ORDER,
            "max_seconds": rirs.MAX_SECONDS, "tail_db": rirs.TAIL_DB}


def _check_manifest(output: Path, seed: int, rate: int, per_room: int) -> None:
    """Write DIR/dasv-rirs.json, or refuse a rerun whose settings differ from the tree's."""
    want = {"format": FORMAT, "seed": seed, "rate": rate, "per_room": per_room, "recipe": _recipe()}
    path = output / MANIFEST
    if path.exists():
        try:
            have = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: not a dasv rirs manifest ({exc})") from None
        diff = [k for k in want if have.get(k) != want[k]] if isinstance(have, dict) else ["format"]
        if diff:
            shown = ", ".join(f"{k} {have.get(k)!r}" for k in diff if k != "recipe") if isinstance(have, dict) else ""
            raise UsageError(f"{output} holds RIRs made with other settings ({shown or 'another recipe'}); "
                             f"use the same --seed/--rate/--per-room or another directory")
        return
    write_text_atomic(path, "RIR manifest", lambda fh: fh.write(json.dumps(want, indent=2) + "\n"))


@contextmanager
def _term_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C (the file in progress is discarded), in the main thread only."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _write_wav(path: Path, rir: np.ndarray, rate: int) -> None:
    import soundfile as sf

    with atomic_path(path, "room impulse response") as tmp:
        # 32-bit PCM: a floor 190 dB down, and no PEAK chunk (libsndfile stamps float WAVs with
        # the time of writing), so the same RIR is the same bytes
        sf.write(tmp, rir, rate, format="WAV", subtype="PCM_32")


def _write_lists(output: Path, todo: list[Slot], rooms: dict[tuple[str, int], rirs.Room]) -> list[str]:
    top = output.resolve().name
    written = []
    for size in SIZES:
        mine = [s for s in todo if s.size == size]
        if not mine:
            continue
        base = output / SIMULATED / size
        lines = [f"--rir-id {s.rir_id} --room-id {s.room_id} {top}/{s.rel}\n" for s in mine]
        write_text_atomic(base / "rir_list", "RIR list", lambda fh: fh.writelines(lines))
        info = []
        for number in sorted({s.room for s in mine}):
            r = rooms[(size, number)]
            info.append(f"Room{number:03d} " + " ".join(f"{v:3.2f}" for v in (*r.dims, *r.mic, r.absorption))
                        + f" {r.rt60:.3f} {r.max_order}\n")
        write_text_atomic(base / "room_info", "room info", lambda fh: fh.writelines(info))
        written.append(str(base / "rir_list"))
    return written


def write_rirs(output: str | Path, count: int, *, seed: int = 0, rate: int = 16000, per_room: int = 100,
               on_progress: Callable[[int, int, int], None] | None = None) -> RirsResult:
    """Simulate the first `count` RIRs of the tree in `output`, skipping those already written.
    `on_progress(done, total, written)` is called after each RIR."""
    if count < 1 or per_room < 1 or rate < 1000:
        raise UsageError("--count and --per-room must be at least 1 and --rate at least 1000 Hz")
    output = create_dir(output, "the RIR directory")
    start = time.monotonic()
    todo = slots(count, per_room)
    rooms: dict[tuple[str, int], rirs.Room] = {}
    written = skipped = 0
    busy = f"{output}: another `dasv rirs` is writing to this directory"
    with DirectoryLock(output, LOCK, lambda who: f"{busy} {who}"), _term_as_interrupt():
        _check_manifest(output, seed, rate, per_room)
        for done, slot in enumerate(todo, start=1):
            room = rooms.get((slot.size, slot.room))
            if room is None:
                room = rooms[(slot.size, slot.room)] = room_of(seed, slot.size, slot.room)
            path = output / slot.rel
            if path.is_file():
                skipped += 1
            else:
                _write_wav(path, rirs.simulate(room, source_of(seed, slot, room), rate), rate)
                written += 1
            if on_progress is not None:
                on_progress(done, len(todo), written)
        lists = _write_lists(output, todo, rooms)
    return RirsResult(str(output), count, written, skipped, round(time.monotonic() - start, 3), lists)
