"""The demo's working directory: lists, trials and a dasv.toml over the bundled LibriSpeech speech.

Kept apart from the CLI so that the same preparation serves `dasv demo`, the README walk-through and
the tests. The split is speaker-disjoint: the model is trained on five speakers and the trials use the
other three, so the demo's EER is measured on voices the model never heard. The held-out
speakers' recordings are split too: trials among the first SELECTION_UTTERANCES of each choose the
checkpoint (validation during training: valid-clients.lst, valid-impostors.lst), and trials among the
rest give the reported EER (clients.lst, impostors.lst), so the choice does not flatter the figure.

The demo works only in a directory of its own: it writes a marker (`.dasv-demo`, JSON naming the
entries the demo writes) into a new or empty directory, refuses a non-empty one without it, and
`--fresh` removes only those entries (a user's own file beside them is kept). A directory of an
earlier dasv without the marker is recognised by its `dasv.toml` (the demo's header) and adopted.
"""

from __future__ import annotations

import itertools
import shutil
from dataclasses import dataclass
from pathlib import Path

# 2 female + 3 male to train on, 2 female + 1 male held out for the trials.
TRAIN_SPEAKERS = ("367", "3080", "2033", "3005", "1688")
HELD_OUT_SPEAKERS = ("533", "3331", "2414")
MARKER = ".dasv-demo"
MARKER_FORMAT = "dasv-demo"
TOML_HEADER = "# dasv demo:"
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

    def entries(self) -> list[str]:
        """The names the demo writes in its working directory (all that `--fresh` removes)."""
        return [self.audio, self.audio_list, self.train_labels, self.clients, self.impostors, self.valid_clients,
                self.valid_impostors, self.config,
                self.features, self.run, self.embeddings, self.scores, self.det_plot]


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
    return f"""{TOML_HEADER} a small configuration for a quick end-to-end run (the paper's model is far larger).
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
    audio_dir = bundled_demo_dir()
    layout = DemoLayout(workdir=workdir, audio_dir=audio_dir)
    marker = _claim(workdir)
    if fresh:
        _remove_outputs(layout, marker)
        marker["audio_copied"] = False
    workdir.mkdir(parents=True, exist_ok=True)
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
    _write_marker(workdir, layout, marker)  # before anything else is made: the directory is the demo's
    marker["audio_copied"] = _link_audio(audio_dir, workdir / layout.audio) or marker.get("audio_copied", False)
    _write_marker(workdir, layout, marker)
    _write_if_changed(workdir / layout.config,
                      demo_toml(layout, max_steps=max_steps, validate_every=validate_every))
    return layout


def _claim(workdir: Path) -> dict:
    """The marker of the demo's working directory (a new one for a new or empty directory); a
    non-empty directory the demo did not make is refused, so that nothing of the user's is touched."""
    import json

    from dasv_cli.errors import UsageError

    path = workdir / MARKER
    if workdir.exists() and not workdir.is_dir():
        raise UsageError(f"{workdir}: exists and is not a directory (choose another -o)")
    if path.is_file():
        try:
            marker = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            marker = None
        if isinstance(marker, dict) and marker.get("format") == MARKER_FORMAT:
            return marker
        raise UsageError(f"{path}: not a dasv demo marker; choose another -o (a new or empty directory)")
    if not workdir.exists() or not any(workdir.iterdir()) or _earlier_demo(workdir):
        return {"format": MARKER_FORMAT, "audio_copied": False}
    raise UsageError(f"{workdir}: not empty and not made by `dasv demo` (no {MARKER}); the demo writes, and "
                     f"--fresh removes, only in a directory of its own: give -o a new or empty directory")


def _earlier_demo(workdir: Path) -> bool:
    """A working directory of a dasv from before the marker: its dasv.toml starts with the demo's header."""
    try:
        with open(workdir / DemoLayout.config, encoding="utf-8") as fh:
            return fh.readline().startswith(TOML_HEADER)
    except (OSError, UnicodeDecodeError):
        return False


def _write_marker(workdir: Path, layout: DemoLayout, marker: dict) -> None:
    import json

    marker = {**marker, "format": MARKER_FORMAT, "entries": layout.entries()}
    _write_if_changed(workdir / MARKER, json.dumps(marker, indent=1, sort_keys=True) + "\n")


def _remove_outputs(layout: DemoLayout, marker: dict) -> None:
    """`--fresh`: remove what the demo wrote (its entries; `audio` only as the demo's link or copy)."""
    from dasv_cli.errors import DasvError, os_error_message

    for name in layout.entries():
        path = layout.workdir / name
        try:
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.is_dir() and (name != layout.audio or marker.get("audio_copied")):
                shutil.rmtree(path)
        except OSError as exc:
            raise DasvError(f"cannot remove {os_error_message(exc, path)}") from exc


def _pairs(utterances: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """Every pair of (key, speaker)s once: (same-speaker 'key1 key2' lines, different-speaker lines)."""
    clients: list[str] = []
    impostors: list[str] = []
    for (u1, s1), (u2, s2) in itertools.combinations(utterances, 2):
        (clients if s1 == s2 else impostors).append(f"{u1} {u2}")
    return clients, impostors


def _link_audio(source: Path, link: Path) -> bool:
    """`workdir/audio` -> the bundled speech (a symlink; a copy where links are not allowed). True
    when it made a copy."""
    if link.is_symlink() and link.resolve() == source.resolve():
        return False
    if link.is_symlink() or link.is_file():
        link.unlink()
    if link.is_dir():
        return False  # a copy from an earlier run (or the user's own audio): keep it
    try:
        link.symlink_to(source, target_is_directory=True)
    except OSError:
        shutil.copytree(source, link)
        return True
    return False


def _write_if_changed(path: Path, text: str) -> None:
    """Keep files (and so their timestamps) that already hold the same text, so reruns reuse work."""
    from dasv_cli.io.atomic import write_text_atomic

    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    write_text_atomic(path, "demo file", lambda fh: fh.write(text))
