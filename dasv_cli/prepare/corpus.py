"""What every corpus layout becomes: utterances (key, file, speaker), checked trial lists, the summary,
and the lists `dasv features` / `dasv train` / `dasv validate` read, written atomically.

Outputs in DIR:
  audio.lst          `key<TAB>path` per utterance (absolute paths), for `dasv features`
  train_labels.txt   `key speaker` for the utterances of speakers in no trial list (a test set's
                     speakers never train), for `dasv train --train-labels`
  trials/NAME.txt    each trial list as `1|0 key1 key2`, its keys checked against the corpus
  skipped.tsv        `path<TAB>reason` for files whose header cannot be read (left out of the lists)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from dasv_cli.errors import EXIT_OK, EXIT_PARTIAL, InputError, where
from dasv_cli.io.atomic import write_text_atomic
from dasv_cli.io.lists import Trials

AUDIO_LIST = "audio.lst"
TRAIN_LABELS = "train_labels.txt"
TRIALS_DIR = "trials"
SKIPPED = "skipped.tsv"
_HEADER_BATCH = 2048


@dataclass(frozen=True)
class Utterance:
    """One utterance of a corpus: its dasv key, the file that holds it, and who speaks."""

    key: str
    path: str
    speaker: str


@dataclass
class TrialList:
    """One trial list as converted: where it came from, its output name, the trials kept."""

    source: str
    name: str
    trials: Trials
    dropped: int = 0  # trials naming an utterance the corpus lacks (with --drop-missing)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "file": f"{TRIALS_DIR}/{self.name}", "trials": len(self.trials),
                "targets": int(self.trials.labels.sum()), "dropped_missing": self.dropped}


@dataclass
class Summary:
    """What `dasv prepare` found and wrote (printed for people, or as JSON with --json)."""

    layout: str
    source: str
    out_dir: str
    speakers: int = 0
    utterances: int = 0
    seconds: float = 0.0
    train_speakers: int = 0
    train_utterances: int = 0
    duplicates: int = 0  # the same key twice (e.g. 00001.wav beside 00001.m4a): one file kept
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): unreadable headers
    trials: list[TrialList] = field(default_factory=list)
    data_dirs: list[str] = field(default_factory=list)  # where the keys are relative to, when several
    written: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_PARTIAL if self.skipped else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "layout": self.layout, "source": self.source, "out_dir": self.out_dir,
            "speakers": self.speakers, "utterances": self.utterances, "hours": self.seconds / 3600,
            "train_speakers": self.train_speakers, "train_utterances": self.train_utterances,
            "duplicates": self.duplicates, "skipped": len(self.skipped),
            "missing": sum(t.dropped for t in self.trials),
            "trials": [t.to_dict() for t in self.trials], "data_dirs": self.data_dirs, "written": self.written,
            "notes": self.notes,
        }

    def lines(self) -> list[str]:
        """The summary for people (stderr)."""
        out = [f"corpus        {self.layout} {self.source}",
               f"speakers      {self.speakers} ({self.train_speakers} in {TRAIN_LABELS})",
               f"utterances    {self.utterances} ({self.train_utterances} in {TRAIN_LABELS})",
               f"hours         {self.seconds / 3600:.2f} (from file headers)"]
        if self.duplicates:
            out.append(f"duplicates    {self.duplicates} keys found twice; one file kept each")
        if self.skipped:
            out.append(f"skipped       {len(self.skipped)} unreadable files (see {Path(self.out_dir) / SKIPPED})")
        for t in self.trials:
            d = t.to_dict()
            out.append(f"trials        {d['file']}: {d['trials']} ({d['targets']} target)"
                       + (f", {t.dropped} dropped: missing utterances" if t.dropped else ", every key present"))
        if len(self.data_dirs) > 1:
            out.append("data dirs     " + ", ".join(self.data_dirs))
        out.extend(f"note          {n}" for n in self.notes)
        out.append("written       " + ", ".join(self.written))
        return out


def read_headers(utts: Sequence[Utterance], show_progress: bool = True) -> tuple[list[float | None], list[tuple[str, str]]]:
    """Seconds of each utterance from its file header (no decoding), None where unreadable, and the
    (path, reason) of those. Threads: the time is FFmpeg's container probing, which releases the GIL."""
    from concurrent.futures import ThreadPoolExecutor

    from dasv_cli import progress
    from dasv_cli.io.audio import AudioError, audio_info

    def one(u: Utterance) -> float | str:
        try:
            return audio_info(u.path).seconds
        except AudioError as exc:
            return exc.reason

    seconds: list[float | None] = []
    skipped: list[tuple[str, str]] = []
    with ThreadPoolExecutor() as pool, progress.make_progress(transient=True) as bar:
        task = bar.add_task("reading headers", total=len(utts), visible=show_progress)
        for start in range(0, len(utts), _HEADER_BATCH):  # a batch at a time: not a million futures
            batch = utts[start:start + _HEADER_BATCH]
            for u, got in zip(batch, pool.map(one, batch)):
                if isinstance(got, str):
                    seconds.append(None)
                    skipped.append((u.path, got))
                else:
                    seconds.append(got)
            bar.advance(task, len(batch))
    return seconds, skipped


def _line_of(src: str, index: int) -> int | None:
    """The line number of the `index`-th content line of a list (for error messages)."""
    from dasv_cli.io.lists import iter_fields

    for i, (_, number, _) in enumerate(iter_fields(src)):
        if i == index:
            return number
    return None


def check_trials(files: Sequence[str | Path], speaker_of: dict[str, str], drop_missing: bool = False,
                 unreadable: dict[str, str] | None = None) -> list[TrialList]:
    """Read each trial list (VoxCeleb or Kaldi form), check every key is a corpus utterance and every
    label agrees with the speakers; a problem is one line naming the file and line. `unreadable`
    (key -> reason) names the files left out for an unreadable header, for a clearer message."""
    import numpy as np

    from dasv_cli.io.lists import read_trials
    from dasv_cli.io.paths import require_file

    out: list[TrialList] = []
    names: dict[str, str] = {}
    for f in files:
        src = str(require_file(f, "a trial list"))
        name = Path(src).stem + ".txt"
        if name in names:
            raise InputError(f"{src}: same output name {TRIALS_DIR}/{name} as {names[name]}; rename one")
        names[name] = src
        trials = read_trials(src)
        keep = np.array([a in speaker_of and b in speaker_of for a, b in zip(trials.key1, trials.key2)], dtype=bool)
        if not keep.all() and not drop_missing:
            i = int(np.flatnonzero(~keep)[0])
            key = trials.key1[i] if trials.key1[i] not in speaker_of else trials.key2[i]
            what = (f"is unreadable ({unreadable[key]})" if unreadable and key in unreadable
                    else "is not an utterance of the corpus")
            raise InputError(f"{where(src, _line_of(src, i))}: {key!r} {what} "
                             f"({int((~keep).sum())} of {len(trials)} trials name missing utterances; "
                             f"--drop-missing leaves them out)")
        for i in np.flatnonzero(keep):
            a, b = trials.key1[i], trials.key2[i]
            same = speaker_of[a] == speaker_of[b]
            if same != bool(trials.labels[i]):
                raise InputError(
                    f"{where(src, _line_of(src, int(i)))}: labelled {'same' if trials.labels[i] else 'different'}-speaker "
                    f"but {a!r} is speaker {speaker_of[a]!r} and {b!r} is {speaker_of[b]!r}")
        if not keep.any():
            raise InputError(f"{src}: none of its {len(trials)} trials has both utterances in the corpus")
        idx = np.flatnonzero(keep)
        kept = Trials([trials.key1[i] for i in idx], [trials.key2[i] for i in idx], trials.labels[idx])
        out.append(TrialList(source=src, name=name, trials=kept, dropped=int((~keep).sum())))
    return out


def _reads_as_int(text: str) -> bool:
    """As io.lists.read_train_labels decides whether a label column holds class numbers."""
    try:
        int(text)
        return True
    except ValueError:
        return False


def _checked_line(u: Utterance) -> str:
    """`key<TAB>path` for audio.lst; keys and paths that no list can hold are refused."""
    if not u.key or len(u.key.split()) != 1:
        raise InputError(f"{u.path}: key {u.key!r} contains spaces (labels and trials split on them)")
    if any(c in u.path for c in "\t\n\r"):
        raise InputError(f"{u.path!r}: a path with a TAB or line break cannot be listed")
    return f"{u.key}\t{u.path}\n"


def write_corpus(out_dir: str | Path, summary: Summary, utts: Sequence[Utterance], keep_trial_speakers: bool = False) -> None:
    """Write DIR's lists for `utts` and `summary.trials` (each file atomically); fills the summary's
    counts. Speakers named in a trial list stay out of train_labels.txt unless `keep_trial_speakers`."""
    out = Path(out_dir)
    lines = [_checked_line(u) for u in utts]
    in_trials = set()
    speaker_of = {u.key: u.speaker for u in utts}
    for t in summary.trials:
        in_trials.update(speaker_of[k] for k in t.trials.unique_keys())
    train = [u for u in utts if keep_trial_speakers or u.speaker not in in_trials]
    summary.speakers = len({u.speaker for u in utts})
    summary.utterances = len(utts)
    summary.train_speakers = len({u.speaker for u in train})
    summary.train_utterances = len(train)
    summary.out_dir = str(out)

    header = f"# key<TAB>path: {summary.layout} corpus {summary.source} (dasv prepare)\n"
    write_text_atomic(out / AUDIO_LIST, "audio list", lambda fh: fh.writelines([header, *lines]))
    summary.written = [str(out / AUDIO_LIST)]
    labels = out / TRAIN_LABELS
    # `key 17` would be read as the integer label 17, not as speaker "17": numeric ids get a prefix
    numeric = all(_reads_as_int(u.speaker) for u in train)
    prefix = "spk" if train and numeric else ""
    if prefix:
        summary.notes.append(f"the speaker ids are numbers: written as spk<id> in {TRAIN_LABELS} "
                             "so that they are read as names, not as class numbers")
    if train:
        write_text_atomic(labels, "train labels",
                          lambda fh: fh.writelines(f"{u.key} {prefix}{u.speaker}\n" for u in train))
        summary.written.append(str(labels))
    else:
        labels.unlink(missing_ok=True)  # an earlier run's, no longer true
        summary.notes.append(f"no {TRAIN_LABELS}: every speaker is in a trial list "
                             "(--keep-trial-speakers writes them all)")
    for t in summary.trials:
        path = out / TRIALS_DIR / t.name
        rows = [f"{int(lab)} {a} {b}\n" for a, b, lab in zip(t.trials.key1, t.trials.key2, t.trials.labels)]
        write_text_atomic(path, "trial list", lambda fh, rows=rows: fh.writelines(rows))
        summary.written.append(str(path))
    skipped = out / SKIPPED
    if summary.skipped:
        write_text_atomic(skipped, "skipped list",
                          lambda fh: fh.writelines(["path\treason\n"] + [f"{p}\t{r}\n" for p, r in summary.skipped]))
        summary.written.append(str(skipped))
    else:
        skipped.unlink(missing_ok=True)


def finish(summary: Summary, utts: list[Utterance], out_dir: str | Path, trial_files: Sequence[str | Path],
           drop_missing: bool, keep_trial_speakers: bool, show_progress: bool) -> Summary:
    """The steps every layout shares once its utterances are known: headers (hours, unreadable
    files left out), trial lists checked against what is left, lists written."""
    seconds, summary.skipped = read_headers(utts, show_progress)
    readable = [u for u, s in zip(utts, seconds) if s is not None]
    summary.seconds = float(sum(s for s in seconds if s is not None))
    if not readable:
        raise InputError(f"{summary.source}: none of the {len(utts)} audio files can be read "
                         f"(first: {summary.skipped[0][0]}: {summary.skipped[0][1]})")
    reasons = dict(summary.skipped)
    bad = {u.key: reasons[u.path] for u, s in zip(utts, seconds) if s is None}
    summary.trials = check_trials(trial_files, {u.key: u.speaker for u in readable}, drop_missing, bad)
    write_corpus(out_dir, summary, readable, keep_trial_speakers)
    return summary
