"""The demo's working directory: lists, trials and a dasv.toml over the bundled LibriSpeech speech.

Kept apart from the CLI so that the same preparation serves `dasv demo`, the README walk-through and
the tests. The split is speaker-disjoint: the model is trained on five speakers and the trials use the
other three, so the demo's EER is measured on voices the model never heard. The held-out
speakers' recordings are split too: trials among the first SELECTION_UTTERANCES of each choose the
checkpoint (validation during training: valid-clients.lst, valid-impostors.lst), and trials among the
rest give the reported EER (clients.lst, impostors.lst), so the choice does not flatter the figure.
"""

from __future__ import annotations

import itertools
import shutil
from dataclasses import dataclass
from pathlib import Path

# 2 female + 3 male to train on, 2 female + 1 male held out for the trials.
TRAIN_SPEAKERS = ("367", "3080", "2033", "3005", "1688")
HELD_OUT_SPEAKERS = ("533", "3331", "2414")
# Recordings of each held-out speaker whose trials choose the checkpoint; the rest are for the report.
SELECTION_UTTERANCES = 2


def bundled_demo_dir() -> Path:
    """The directory of the demo speech shipped inside the package."""
    from importlib import resources

    return Path(str(resources.files("dasv_cli") / "data" / "demo"))


@dataclass(frozen=True)
class DemoLayout:
    """Where the demo keeps each of its inputs and outputs, relative to its working directory."""

    workdir: Path
    audio_dir: Path  # the bundled speech; `audio` in the working directory points at it
    audio: str = "audio"
    audio_list: str = "audio.lst"
    train_labels: str = "train_labels.txt"
    clients: str = "clients.lst"  # the reported trials
    impostors: str = "impostors.lst"
    valid_clients: str = "valid-clients.lst"  # the trials that choose the checkpoint (disjoint recordings)
    valid_impostors: str = "valid-impostors.lst"
    config: str = "dasv.toml"
    features: str = "features"
    run: str = "run"
    embeddings: str = "embeddings.h5"
    scores: str = "scores.tsv"
    det_plot: str = "det.png"

    @property
    def checkpoint(self) -> str:
        return f"{self.run}/best.pt"


def _utterances(audio_dir: Path) -> dict[str, list[str]]:
    by_speaker: dict[str, list[str]] = {}
    for speaker in TRAIN_SPEAKERS + HELD_OUT_SPEAKERS:
        files = sorted((audio_dir / speaker).glob("*.flac"))
        if not files:
            from dasv_cli.errors import DasvError

            raise DasvError(f"{audio_dir / speaker}: demo audio missing (broken installation?)")
        by_speaker[speaker] = [f"{speaker}/{f.stem}" for f in files]
    return by_speaker


def demo_toml(layout: DemoLayout, *, max_steps: int, validate_every: int) -> str:
    """The demo's training setup: a small network that trains in minutes on two CPU cores."""
    return f"""# dasv demo: a small configuration for a quick end-to-end run (the paper's model is far larger).
# `dasv train` reads this file from the working directory; command-line flags override it.
train-labels = "{layout.train_labels}"
features = "{layout.features}"
valid-clients = "{layout.valid_clients}"
valid-impostors = "{layout.valid_impostors}"
out = "{layout.run}"
front-end = "VGG3L"
kernel-size = 64
heads = 8
embedding-size = 64
window-seconds = 2.0
batch-size = 12
grad-accumulation = 1
learning-rate = 0.001
max-steps = {max_steps}
validate-every = {validate_every}
seed = 1
"""


def prepare(workdir: str | Path, *, fresh: bool = False, max_steps: int = 300,
            validate_every: int = 50) -> DemoLayout:
    """Write the demo's lists, trials and dasv.toml into `workdir` (kept as they are unless `fresh`)."""
    workdir = Path(workdir)
    if fresh and workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    audio_dir = bundled_demo_dir()
    layout = DemoLayout(workdir=workdir, audio_dir=audio_dir)
    utts = _utterances(audio_dir)

    audio_lines = [u + ".flac" for s in TRAIN_SPEAKERS + HELD_OUT_SPEAKERS for u in utts[s]]
    # Speaker names, not numbers: a bare integer label is read as a class index 0..N-1.
    label_lines = [f"{u} LS-{s}" for s in TRAIN_SPEAKERS for u in utts[s]]
    choose = _pairs([(u, s) for s in HELD_OUT_SPEAKERS for u in utts[s][:SELECTION_UTTERANCES]])
    report = _pairs([(u, s) for s in HELD_OUT_SPEAKERS for u in utts[s][SELECTION_UTTERANCES:]])

    files = {
        layout.audio_list: audio_lines,
        layout.train_labels: label_lines,
        layout.clients: report[0],
        layout.impostors: report[1],
        layout.valid_clients: choose[0],
        layout.valid_impostors: choose[1],
    }
    for name, lines in files.items():
        _write_if_changed(workdir / name, "\n".join(lines) + "\n")
    _link_audio(audio_dir, workdir / layout.audio)
    _write_if_changed(workdir / layout.config,
                      demo_toml(layout, max_steps=max_steps, validate_every=validate_every))
    return layout


def _pairs(utterances: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """Every pair of (key, speaker)s once: (same-speaker 'key1 key2' lines, different-speaker lines)."""
    clients: list[str] = []
    impostors: list[str] = []
    for (u1, s1), (u2, s2) in itertools.combinations(utterances, 2):
        (clients if s1 == s2 else impostors).append(f"{u1} {u2}")
    return clients, impostors


def _link_audio(source: Path, link: Path) -> None:
    """`workdir/audio` -> the bundled speech (a symlink; a copy where links are not allowed)."""
    if link.is_symlink() and link.resolve() == source.resolve():
        return
    if link.is_symlink() or link.is_file():
        link.unlink()
    if link.is_dir():
        return  # a copy from an earlier run (or the user's own audio): keep it
    try:
        link.symlink_to(source, target_is_directory=True)
    except OSError:
        shutil.copytree(source, link)


def _write_if_changed(path: Path, text: str) -> None:
    """Keep files (and so their timestamps) that already hold the same text, so reruns reuse work."""
    from dasv_cli.io.atomic import write_text_atomic

    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    write_text_atomic(path, "demo file", lambda fh: fh.write(text))
