"""`compare export mlflow RUN`: a finished run directory into the user's MLflow tracking store.
Parsing and printing only; the work is in runner/export/mlflow_store.py."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from compare.cli.app import app, console, fail

export_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Send a finished run to another tool (MLflow).")
app.add_typer(export_app, name="export")


@export_app.command("mlflow")
def mlflow_cmd(
    run_dir: Annotated[Path, typer.Argument(help="The run directory to export.")],
    tracking_uri: Annotated[str, typer.Option("--tracking-uri", help="MLflow tracking URI: a SQLite file (sqlite:///path.db, MLflow's default store) or a server (http://host:5000).")] = "sqlite:///mlflow.db",
    experiment: Annotated[Optional[str], typer.Option("--experiment", help="MLflow experiment to export into; default: the run's experiment name.")] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
):
    """Export a run to MLflow: one parent run, one child run per model and seed with its curves
    (docs/export.md). Exporting the same run again adds nothing; a failed export is replaced."""
    from compare.export.mlflow_store import export_run  # noqa: PLC0415 - pandas and mlflow only when it runs

    try:
        done = export_run(run_dir, tracking_uri, experiment)
    except Exception as err:  # noqa: BLE001 - mapped to an exit code in one place
        fail(err, debug)
    if done.unchanged:
        line = f"{run_dir} is already in MLflow experiment {done.experiment!r} (parent run {done.parent_id}, {done.children} child runs): nothing to do"
    else:
        again = f", replacing {done.replaced} earlier incomplete or outdated export(s)" if done.replaced else ""
        line = f"exported {run_dir} to MLflow experiment {done.experiment!r}: parent run {done.parent_id}, {done.children} child runs{again}"
    console.print(line, markup=False, highlight=False, soft_wrap=True)  # one line, however long the paths
    if tracking_uri.startswith("sqlite:"):
        console.print(f"view it: mlflow ui --backend-store-uri {tracking_uri}", markup=False, highlight=False, soft_wrap=True)
