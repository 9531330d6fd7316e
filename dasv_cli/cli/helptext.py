"""`--help` as written, for every command at once: help text is literal, values are named by metavars.

Typer's rich help reads every help string, docstring and epilog as rich markup, so `[x]` in
`key label [x]` or `pip install "dasv[export]"` vanished; and it names each value by its Python type
(`<bool>` beside a flag, `<list[Path]>`, `<str>` for a path). `tidy` walks the built click command
tree once, before it runs: every `[` becomes literal except the few style tags the epilogs use on
purpose, a flag shows no value, an argument shows its name only, and an option without a metavar
shows a plain word for its kind (N, X, TEXT, PATH, or its choices).
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any, Sequence

from typer.core import TyperArgument, TyperOption

# The only rich markup dasv's help means: bold and dim in epilogs. Every other '[' is text.
_NOT_A_STYLE_TAG = re.compile(r"(?<!\\)\[(?!/?(?:bold|dim|italic)\])")


def literal(text: str | None) -> str | None:
    """`text` with every '[' that does not open a bold/dim/italic tag escaped for rich markup."""
    return None if text is None else _NOT_A_STYLE_TAG.sub(r"\\[", text)


_KIND = {"int": "N", "int range": "N", "float": "X", "float range": "X", "str": "TEXT", "bool": "",
         "path": "PATH", "Path": "PATH", "file": "FILE", "directory": "DIR"}


def _kind(typed: str) -> str:
    """A metavar from typer's `<type>` label: `<int range>` -> N, `<list[Path]>` -> PATH..., `<a|b>` -> a|b."""
    label = typed[1:-1] if typed.startswith("<") and typed.endswith(">") else typed
    if label.startswith("list[") and label.endswith("]"):
        return _kind(label[5:-1]) + "..."
    return _KIND.get(label, label)


class _Option(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        if self.is_flag:
            return None
        if self.metavar is not None:
            return self.metavar
        return _kind(self.display_type(ctx)) or None


class _Argument(TyperArgument):
    def display_type_rich(self, ctx: Any) -> str | None:
        return None  # its name (metavar) already says what it is


def tidy(command: Any, help_names: Sequence[str] = ("-h", "--help")) -> Any:
    """Make `command` and every subcommand show their help as written (see the module docstring);
    `help_names` are the app's help options (click makes that option when it is first asked for)."""
    command.help = literal(command.help)
    command.short_help = literal(command.short_help)
    command.epilog = literal(command.epilog)
    own = (command.context_settings or {}).get("help_option_names", help_names)
    names = SimpleNamespace(help_option_names=list(own))
    helper = command.get_help_option(names)
    for param in [*command.params, *([helper] if helper is not None else [])]:
        if isinstance(param, TyperOption):
            param.__class__ = _Option
        elif isinstance(param, TyperArgument):
            param.__class__ = _Argument
        if getattr(param, "help", None):
            param.help = literal(param.help)
    for sub in getattr(command, "commands", {}).values():  # a group's subcommands
        tidy(sub, names.help_option_names)
    return command
