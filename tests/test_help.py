"""`--help` of every command shows its text as written: brackets survive rich markup, values are
named by metavars (no Python types), and the short options mean one thing everywhere."""

from __future__ import annotations

import re

import pytest
from conftest import run_inprocess

_STYLE_TAG = re.compile(r"\[/?(?:bold|dim|italic)\]")


def _commands() -> dict[str, object]:
    """{'export': click command, 'prepare voxceleb': ..., ...}: every (sub)command, as the app builds it."""
    from typer.main import get_command

    from dasv_cli.cli.app import build_app

    found: dict[str, object] = {}

    def walk(command: object, path: tuple[str, ...]) -> None:
        if path:
            found[" ".join(path)] = command
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, path + (name,))

    walk(get_command(build_app()), ())
    return found


def _flat(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


def _bracketed(command: object) -> list[str]:
    """Every `[...]` its help strings hold as written (not the bold/dim tags the epilogs mean)."""
    texts = [command.help or "", command.epilog or ""] + [p.help or "" for p in command.params if hasattr(p, "help")]
    found = []
    for text in texts:
        plain = _STYLE_TAG.sub("", text)
        found += re.findall(r"\[[^\[\]]*\]", _flat(plain))
    return found


COMMANDS = _commands()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_shows_brackets_and_metavars_not_types(name: str) -> None:
    r = run_inprocess(*name.split(), "--help", env={"COLUMNS": "250"})
    assert r.code == 0, r.stderr
    shown = _flat(r.stdout)
    for text in _bracketed(COMMANDS[name]):
        assert text in shown, f"dasv {name} --help lost {text!r}"
    for leak in ("<bool>", "<str>", "<path>", "<int", "<float", "list[", "<Path>"):
        assert leak not in shown, f"dasv {name} --help shows {leak!r}"


def test_the_issues_examples_read_as_written() -> None:
    export = _flat(run_inprocess("export", "--help", env={"COLUMNS": "250"}).stdout)
    assert 'pip install "dasv[export]"' in export and "[batch, frames, n_mels]" in export
    trials = _flat(run_inprocess("prepare", "trials", "--help", env={"COLUMNS": "250"}).stdout)
    assert "'key label [x]'" in trials
    train = _flat(run_inprocess("train", "--help", env={"COLUMNS": "250"}).stdout)
    assert "--resume Continue" in train and "--train-labels FILE" in train and "--features DIR" in train


def test_short_a_is_the_audio_dir_everywhere(tmp_path) -> None:
    """-a means --audio-dir in features and embed; the old `embed -a LIST` is told what -a is now."""
    for name in ("features", "embed"):
        opts = {o for p in COMMANDS[name].params if "--audio-dir" in getattr(p, "opts", []) for o in p.opts}
        assert "-a" in opts, name
    lst = tmp_path / "audio.lst"
    lst.write_text("a.wav\n")
    r = run_inprocess("embed", "--model", "nothing.pt", "-a", str(lst), "-o", "-")
    assert r.code == 2 and "-a is --audio-dir" in r.stderr and "--audio LIST" in r.stderr
