"""The network flags of `dasv train` and `dasv model`, made from ModelConfig's fields.

A command declares its own options as usual and takes the network options as `**network`; the
decorator writes them into the command's signature (what typer reads), each with ModelConfig's help
text and default, so a new network option reaches both commands without either being edited.
A flag left out arrives as None (the command then keeps the config file's or the checkpoint's value).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Optional

import typer


def _parameter(f: Any, panel: str | None) -> inspect.Parameter:
    """One ModelConfig field as a keyword parameter whose default is its typer Option."""
    flag = "--" + f.name.replace("_", "-")
    kind = f.metadata["type"]
    decl = f"{flag}/--no-{flag[2:]}" if kind is bool else flag
    default = "" if f.default is None else f" [default: {f.default}]"
    option = typer.Option(None, decl, help=f"{f.metadata['help']}{default}", rich_help_panel=panel)
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Optional[kind])


def network_options(*roles: str, after: str | None = None, panel: str | None = None) -> Callable:
    """Decorate a command taking `**network`: ModelConfig's options of these roles become its flags,
    placed after the parameter `after` (first when None) and shown under `panel` in --help."""
    from dasv_cli.model.config import options

    generated = [_parameter(f, panel) for f in options(*roles)]

    def decorate(command: Callable) -> Callable:
        sig = inspect.signature(command, eval_str=True)
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in sig.parameters.values()
               if p.kind is not inspect.Parameter.VAR_KEYWORD]
        at = 0 if after is None else [p.name for p in own].index(after) + 1
        command.__signature__ = sig.replace(parameters=own[:at] + generated + own[at:])
        return command

    return decorate


__all__ = ["network_options"]
