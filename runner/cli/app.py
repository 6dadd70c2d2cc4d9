"""The `compare` application: the typer app, the console, and THE one place an error becomes an
exit code (`fail`). Commands live beside it (run, reports, authoring, bench); runner/cli/main.py
registers them. The library raises typed errors and never exits.

Exit codes: 0 done, 1 internal error, 2 bad config or input, 3 finished with some models
failed or diverged, 130/143 interrupted by SIGINT/SIGTERM (checkpoint written).
"""
from __future__ import annotations

import sys
import traceback

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from compare.atomic import is_disk_full
from compare.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, LINE_CHARS, CompareError, clip

# rich_markup_mode=None: help texts are plain text, so `[[model]]` and `<name>` print as written.
app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Train several PyTorch models in one shared dataloader pass and compare them.",
)
# Wide when piped (CI logs, files) so the leaderboard table is not squeezed to 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)


def _print_version(value: bool) -> None:
    if value:
        from compare import __version__  # noqa: PLC0415

        typer.echo(f"compare {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit.")) -> None:
    """Train several PyTorch models in one shared dataloader pass and compare them."""


def fail(err: Exception, debug: bool) -> None:
    """One line per problem on stderr (no traceback unless --debug), then the exit code. Under
    torchrun the ranks share their errors, so rank 0 alone prints them, unless one rank alone knows."""
    from compare.run.launch import env_rank  # noqa: PLC0415 - torch-free: reads torchrun's environment

    if isinstance(err, CompareError) and env_rank() > 0 and not err.rank_local:
        raise typer.Exit(err.exit_code)
    if debug:
        traceback.print_exc()
    if isinstance(err, CompareError):
        for line in str(err).splitlines():
            sys.stderr.write(f"error: {clip(line, LINE_CHARS)}\n")
        raise typer.Exit(err.exit_code)
    if is_disk_full(err):  # anywhere (history.csv, predictions, TensorBoard): the user's to fix
        where = f" writing {err.filename}" if getattr(err, "filename", None) else ""
        sys.stderr.write(f"error: no space left on device{where}; free some space, then `compare resume RUN_DIR` goes on from the last checkpoint\n")
        raise typer.Exit(EXIT_BAD_INPUT)
    sys.stderr.write(f"internal error: {type(err).__name__}: {clip(' '.join(str(err).split()), LINE_CHARS)} (rerun with --debug for the traceback)\n")
    raise typer.Exit(EXIT_INTERNAL)


def frame_table(frame, title: str, left: set[str], wrap: set[str], whole: set[str] = frozenset()) -> Table:
    """A DataFrame of display cells as a rich table: `left` columns left-aligned (the others
    right), only `wrap` columns wrap, `whole` columns never shrink below their longest cell,
    and every cell escaped (sweep names like tudui[lr=0.1] are not rich markup)."""
    table = Table(title=escape(title))
    for column in frame.columns:
        widest = max([len(str(column)), *(len(str(v)) for v in frame[column])]) if column in whole else None
        table.add_column(escape(str(column)), justify="left" if column in left else "right", no_wrap=column not in wrap or column in whole, min_width=widest)
    for row in frame.itertuples(index=False):
        table.add_row(*(escape(str(v)) for v in row))
    return table


def table_width(frame) -> int:
    """The width of frame_table(frame) with no column squeezed: each cell, its padding, the rules."""
    return 1 + sum(3 + max([len(str(c)), *(len(str(v)) for v in frame[c])]) for c in frame.columns)


def fit_columns(frame, width: int, drop_first: list[str], keep: set[str]):
    """(frame, dropped): columns dropped, `drop_first` in order and then the others from the
    right, until the table fits `width`; `keep` columns are never dropped."""
    order = [c for c in drop_first if c in frame.columns] + [c for c in reversed(frame.columns) if c not in drop_first]
    dropped = []
    for column in order:
        if table_width(frame) <= width:
            break
        if column not in keep:
            frame = frame.drop(columns=column)
            dropped.append(column)
    return frame, dropped
