"""`compare`'s entry point: every command module registers itself on the one typer app."""
from __future__ import annotations

import signal
import sys
import warnings

from compare.errors import CompareNote, CompareWarning, StopNow
from compare.run.interrupts import SIGNALS, stop_at_once_on_signals


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A CompareNote is one `note: ...` line, a CompareWarning one `warning: ...` line; other
    warnings keep Python's format."""
    if issubclass(category, CompareNote):
        sys.stderr.write(f"note: {message}\n")
    elif issubclass(category, CompareWarning):
        sys.stderr.write(f"warning: {message}\n")
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


def application():
    """The typer app with every command registered (imported here, not at module level, so
    that `main` has its signal handling in place first)."""
    from compare.cli import run, authoring, reports, bench, export  # noqa: F401,I001 - each registers its commands on `app`, in `--help` order
    from compare.cli.app import app

    return app


def main() -> None:
    # First: a signal during the imports below (typer, rich, torch) is one line and 130/143,
    # not a bare death by signal; `compare run` handles signals its own way while it trains.
    stop_at_once_on_signals()
    try:
        app = application()
        warnings.showwarning = _show_warning
        app()
    except StopNow as err:
        sys.stderr.write(f"error: {err}\n")
        _exiting()
        sys.exit(err.exit_code)
    except SystemExit:
        _exiting()
        raise


def _exiting() -> None:
    """The exit code is decided: a signal during the interpreter's teardown (seconds with torch
    loaded) would only turn it into a death by that signal (Python restores the default
    handlers there), as a second SIGTERM after the first in start-up did."""
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
