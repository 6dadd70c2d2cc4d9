"""The `compare` command. This layer parses, prints, and maps errors to exit codes; the
library raises typed errors and never exits.

Exit codes: 0 done, 1 internal error, 2 bad config or input.
"""
from __future__ import annotations

import sys
import traceback
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from runner.errors import EXIT_INTERNAL, CompareError, ConfigError, Problem

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Train several PyTorch models in one shared dataloader pass and compare them.")
# Wide when piped (CI logs, files) so the leaderboard table is not squeezed to 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)


def _fail(err: Exception, debug: bool) -> None:
    """One line per problem on stderr (no traceback unless --debug), then the exit code."""
    if debug:
        traceback.print_exc()
    if isinstance(err, CompareError):
        for line in str(err).splitlines():
            sys.stderr.write(f"error: {line}\n")
        raise typer.Exit(err.exit_code)
    sys.stderr.write(f"internal error: {type(err).__name__}: {err} (rerun with --debug for the traceback)\n")
    raise typer.Exit(EXIT_INTERNAL)


def seeds_override(text: str) -> str:
    """`--seeds 0,1,2` -> the override `experiment.seeds=[0, 1, 2]`."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError([Problem("--seeds", "experiment.seeds", f"expected distinct comma-separated integers like 0,1,2, got {text!r}")])
    return f"experiment.seeds=[{', '.join(map(str, seeds))}]"


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="Experiment TOML file.")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a key: dotted.key=value (TOML value); model.<name>.key=value for one model.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run directory (default: <experiment.output_dir>/<experiment.name>).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory.")] = False,
    seeds: Annotated[Optional[str], typer.Option(help="Repeat the whole pass per seed, e.g. 0,1,2 (sets experiment.seeds).")] = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write RUN_DIR/plots/*.png at the end.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
):
    """Train every [[model]] of CONFIG in one shared pass over the data; write the run directory."""
    from runner.experiment import Experiment  # noqa: PLC0415 - keeps `compare --help` fast
    from runner.progress import Progress, RichProgress  # noqa: PLC0415
    from runner.report import build  # noqa: PLC0415
    from runner.rundir import load_run  # noqa: PLC0415

    try:
        overrides = (set_ or []) + ([seeds_override(seeds)] if seeds is not None else [])
        experiment = Experiment.from_toml(config, overrides)
        result = experiment.run(out, overwrite=overwrite, progress=Progress() if quiet else RichProgress(), argv=sys.argv, plots=plots)
        board = build([load_run(result.run_dir)])  # the evidence lines need the full report
    except Exception as err:  # noqa: BLE001 - mapped to an exit code in one place
        _fail(err, debug)
    print_board(board, f"{experiment.config.experiment.name}: leaderboard (final epoch)")
    console.print(f"run directory: {result.run_dir}")
    console.print(f"leaderboard: {result.run_dir / 'leaderboard.md'}" + (f"; plots: {result.run_dir / 'plots'}/" if plots else ""))
    console.print(f"TensorBoard: compare tensorboard {result.run_dir}")


class Kind(str, Enum):
    models = "models"
    datasets = "datasets"
    losses = "losses"
    optimizers = "optimizers"
    schedulers = "schedulers"


@app.command("list")
def list_(kind: Annotated[Kind, typer.Argument(help="What to list.")]):
    """List the names usable in a config."""
    from runner import components  # noqa: PLC0415

    try:
        if kind is Kind.models:
            from models import list_models  # noqa: PLC0415

            names = list_models()
        elif kind is Kind.datasets:
            names = components.dataset_package().list_datasets()
        else:
            names = getattr(components, f"list_{kind.value}")()
    except Exception as err:  # noqa: BLE001
        _fail(err, debug=False)
    for name in names:
        typer.echo(name)


def main() -> None:
    app()


# Report commands (leaderboard, plot, tensorboard) register themselves on `app`.
from runner.cli_reports import print_board  # noqa: E402
