"""The `dasv` Typer app: global options, subcommand registration, and the error/exit-code policy.

Each subcommand lives in its own thin module with a `register(app)` function. Those modules import
only typer and the standard library at top level (the engine is imported inside the command), so
`dasv --help` and start-up stay fast.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import typer

from dasv_cli import __version__
from dasv_cli.errors import EXIT_ERROR, EXIT_INTERRUPTED, DasvError, os_error_message

try:  # typer >= 0.22 vendors click; older releases depend on it
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException

_state = {"debug": False}

# Order here is the order in `dasv --help`.
_COMMAND_MODULES = ("prepare", "features", "rirs", "inspect", "train", "validate", "embed", "score", "compare",
                    "enroll", "calibrate", "export", "convert", "model", "demo")


def debug_enabled() -> bool:
    return _state["debug"] or os.environ.get("DASV_DEBUG", "") not in ("", "0")


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"dasv {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    """A fresh app with every subcommand registered (fresh so tests can call it repeatedly)."""
    import importlib

    app = typer.Typer(
        name="dasv",
        help="Double Multi-Head Attention speaker verification: features, training, embeddings, scoring.\n\n"
             "New here? `dasv demo` runs the whole chain on speech bundled with dasv in about a minute, "
             "and `dasv demo --setup-only -o DIR` writes its lists for a walk-through (see the README).",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
        rich_markup_mode="rich",
    )

    @app.callback()
    def _root(
        version: Optional[bool] = typer.Option(
            None, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
        ),
        debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    ) -> None:
        """dasv: speaker verification with Double Multi-Head Attention (India et al., ICASSP 2021)."""
        _state["debug"] = debug

    for name in _COMMAND_MODULES:
        module = importlib.import_module(f"dasv_cli.cli.{name}")
        module.register(app)
    return app


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"dasv: error: {message}\n")
    sys.stderr.flush()
    return code


def _show_usage_error(exc: Exception) -> None:
    try:
        from typer import rich_utils

        rich_utils.rich_format_error(exc)
    except Exception:  # pragma: no cover - plain fallback
        sys.stderr.write(f"dasv: error: {exc}\n")


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return the exit code (never raises for user errors)."""
    from typer.main import get_command

    from dasv_cli.cli.helptext import tidy

    command = tidy(get_command(build_app()))
    args = sys.argv[1:] if argv is None else list(argv)
    if "--debug" in args[:1]:
        _state["debug"] = True
    try:
        rv = command.main(args=args, prog_name="dasv", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        return _fail("interrupted", EXIT_INTERRUPTED)
    except ClickException as exc:
        _show_usage_error(exc)
        return exc.exit_code
    except DasvError as exc:
        if debug_enabled():
            import traceback

            traceback.print_exc()
        return _fail(exc.message, exc.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:
        # The reader of stdout went away (`dasv ... | head`): not an error for a data producer.
        _silence_stdout()
        return 0
    except OSError as exc:
        if debug_enabled():
            import traceback

            traceback.print_exc()
        return _fail(os_error_message(exc), EXIT_ERROR)
    if rv == EXIT_INTERRUPTED:
        return _fail("interrupted", EXIT_INTERRUPTED)
    return rv if isinstance(rv, int) else 0


def main() -> None:
    """Console-script entry point (and `python -m dasv_cli`)."""
    code = run()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
    _forget_caught_interrupts()
    sys.exit(code)


def _forget_caught_interrupts() -> None:
    """Keep the exit code run() decided (130 after Ctrl-C) from being replaced by death by SIGINT.

    CPython remembers a KeyboardInterrupt that escaped code run from a source string (`exec(str)`:
    dataclass and namedtuple creation use it, so a Ctrl-C landing during an import sets the mark),
    even when dasv caught it further up; under `python -m` the interpreter then ends itself by SIGINT
    at exit (returncode -2) instead of exiting with the code. Running any source string clears the
    mark (CPython resets it on each one), so an empty one does.
    """
    exec("")  # noqa: S102 - a constant empty string: nothing runs


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail on a closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
