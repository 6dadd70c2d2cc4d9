"""The authoring commands: `compare init NAME` and the plan `compare run CONFIG --dry-run`
prints. Registered on `runner.cli.app.app` (runner/cli/app.py imports this module)."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from runner.cli.app import app, fail


@app.command()
def init(
    name: Annotated[str, typer.Argument(help="Experiment name: letters, digits, _ (names the files).")],
    directory: Annotated[Path, typer.Option("--dir", help="Where to write the files.")] = Path("experiments"),
):
    """Write DIR/NAME.toml (runs as written) with templates for your model (NAME_model.py) and dataset (NAME_data.py)."""
    from runner.config.templates import write_templates  # noqa: PLC0415

    try:
        toml, model, data = write_templates(name, directory)
    except Exception as err:  # noqa: BLE001 - mapped to an exit code in one place
        fail(err, debug=False)
    typer.echo(f"wrote {toml}  (the experiment: your model against lenet, on your data)")
    typer.echo(f"wrote {model}  (Net: replace it with your model, or set arch to a notebook: my.ipynb:Net)")
    typer.echo(f"wrote {data}  (replace load_data() with your dataset; until then: 8x8 digits)")
    typer.echo("next:")
    typer.echo(f"  compare run {toml} --dry-run   # builds everything, one batch per model, prints the plan")
    typer.echo(f"  compare run {toml}             # trains them in one shared pass; prints the leaderboard")


def _size(n_bytes: int | None) -> str:
    return "?" if n_bytes is None else f"{n_bytes / 2**20:,.1f} MiB"


def _count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f}{unit}"
    return f"{n:,.0f}"


def print_plan(console: Console, plan) -> None:
    shape = "x".join(str(s) for s in plan.input_shape)
    console.print(f"[bold]{escape(plan.experiment)}[/bold]: dry run (nothing trained, nothing written)")
    console.print(f"device: {plan.device}")
    console.print(f"data: {escape(plan.dataset)}: {plan.train_samples:,} train / {plan.val_samples:,} val / {plan.test_samples:,} test samples, input {shape}, {plan.num_classes} classes")
    for split in ("val", "test"):
        console.print(f"  {split}: {escape(plan.sources.get(split, 'none'))}")
    steps = plan.batches_per_epoch * plan.epochs
    console.print(f"batches per epoch: {plan.batches_per_epoch:,} of {plan.batch_size} (+ {plan.eval_batches:,} eval batches); {plan.epochs} epochs = {steps:,} steps per model")
    table = Table(title=f"{len(plan.models)} models, one shared pass")
    for column in ("model", "arch", "params", "FLOPs/sample", "optimizer", "output", "est. memory"):
        table.add_column(column, justify="right" if column in ("params", "FLOPs/sample", "est. memory") else "left")
    for m in plan.models:
        output = "x".join(str(s) for s in m.output_shape)
        table.add_row(escape(m.name), escape(m.arch), f"{m.params:,}", _count(m.flops_per_sample), escape(m.optimizer), output, _size(m.memory_bytes))
    console.print(table)
    console.print("est. memory = weights + gradients + optimizer state + activations saved for one batch; FLOPs are the forward pass (a training step is about 3x)")
    total = sum(m.memory_bytes for m in plan.models)
    console.print(f"all models together: {_size(total)}")
    note = " (exists: add --overwrite or choose --out)" if plan.run_dir_exists else ""
    console.print(f"run directory: {escape(str(plan.run_dir))}{note}")


class Kind(str, Enum):
    models = "models"
    datasets = "datasets"
    losses = "losses"
    optimizers = "optimizers"
    schedulers = "schedulers"
    transforms = "transforms"


@app.command("list")
def list_(kind: Annotated[Kind, typer.Argument(help="What to list.")]):
    """List the names usable in a config."""
    from runner.build import components  # noqa: PLC0415

    try:
        if kind is Kind.models:
            from models import list_models  # noqa: PLC0415

            names = list_models()
        elif kind is Kind.datasets:
            names = components.dataset_package().list_datasets()
        elif kind is Kind.transforms:
            from datasets.transforms import list_transforms  # noqa: PLC0415

            names = list_transforms()
        else:
            names = getattr(components, f"list_{kind.value}")()
    except Exception as err:  # noqa: BLE001
        fail(err, debug=False)
    for name in names:
        typer.echo(name)
