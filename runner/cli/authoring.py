"""The authoring commands: `compare init NAME` and the plan `compare run CONFIG --dry-run`
prints. Registered on `compare.cli.app.app` (runner/cli/app.py imports this module)."""
from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from compare.cli.app import app, fail
from compare.errors import CompareError, did_you_mean


@app.command()
def init(
    name: Annotated[str, typer.Argument(help="Experiment name: letters, digits, _ (names the files).")],
    directory: Annotated[Path, typer.Option("--dir", help="Where to write the files.")] = Path("experiments"),
):
    """Write DIR/NAME.toml (runs as written) with templates for your model (NAME_model.py) and dataset (NAME_data.py)."""
    from compare.config.templates import write_templates  # noqa: PLC0415

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
    shape = plan.input_text()  # `variable (...)` where samples differ in size
    console.print(f"[bold]{escape(plan.experiment)}[/bold]: dry run (nothing trained, nothing written)")
    console.print(f"device: {plan.device}")
    console.print(f"data: {escape(plan.dataset)}: {plan.train_samples:,} train / {plan.val_samples:,} val / {plan.test_samples:,} test samples, input {shape}" + (f", {plan.num_classes} {'labels' if plan.task.kind == 'multilabel' else 'classes'}" if plan.num_classes else ""))
    console.print(f"task: {plan.task.describe()}; metrics: {', '.join(plan.metrics) or 'the loss only'} (ranked by {plan.rank}; docs/metrics.md)")
    for split in ("val", "test"):
        console.print(f"  {split}: {escape(plan.sources.get(split, 'none'))}")
    steps = plan.batches_per_epoch * plan.epochs
    console.print(f"batches per epoch: {plan.batches_per_epoch:,} of {plan.batch_size} (+ {plan.eval_batches:,} eval batches); {plan.epochs} epochs = {steps:,} steps per model")
    if plan.accumulate:  # experiment.accumulate: the effective batch, optimizer steps per epoch
        console.print(plan.accumulate, markup=False)
    table = Table(title=f"{len(plan.models)} models, one shared pass")
    for column in ("model", "arch", "params", "FLOPs/sample", "optimizer", "output", "est. memory"):
        table.add_column(column, justify="right" if column in ("params", "FLOPs/sample", "est. memory") else "left")
    for m in plan.models:
        output = "x".join(str(s) for s in m.output_shape)
        if m.heads and plan.task.kind == "heads":  # several heads: each head's output per batch
            output = ", ".join(f"{h} {'x'.join(str(s) for s in (plan.batch_size, *shape))}" for h, shape in m.heads.items())
        table.add_row(escape(m.name), escape(m.arch), f"{m.params:,}", _count(m.flops_per_sample) if m.flops_per_sample is not None else "n/a", escape(m.optimizer), output, _size(m.memory_bytes))
    console.print(table)
    console.print("est. memory = weights + gradients + optimizer state + activations saved for one batch; FLOPs are the forward pass (a training step is about 3x)")
    if plan.flops_note():
        console.print(plan.flops_note(), markup=False)
    if plan.input_structure is not None:  # which models take a dict input spread as keywords (docs/custom-models-and-datasets.md)
        console.print("input: " + ", ".join(f"{m.name} {m.call}" for m in plan.models) + " (a dict is spread as keywords where forward names its keys)", markup=False)
    total = sum(m.memory_bytes for m in plan.models)
    console.print(f"all models together: {_size(total)}")
    if plan.families:
        console.print(f"families ({len(plan.families) - sum(line.startswith('warning:') for line in plan.families)}; each one's best trial is chosen on val: docs/tuning.md):", markup=False)
        for line in plan.families:
            console.print(f"  {line}", markup=False, highlight=False)
    note = " (exists: add --overwrite or choose --out)" if plan.run_dir_exists else ""
    console.print(f"run directory: {escape(str(plan.run_dir))}{note}")


KINDS = ("models", "datasets", "losses", "optimizers", "schedulers", "transforms")


def summary(obj, module_first: bool = False) -> str:
    """The first sentence of an entry's own docstring (a class's, not its base's), else (or,
    `module_first`, before it) of its module's; cut to one line."""
    own = obj.__doc__ if isinstance(obj, type) else getattr(obj, "__doc__", None)
    module = getattr(sys.modules.get(getattr(obj, "__module__", ""), None), "__doc__", None)
    doc = (module or own) if module_first else (own or module)
    text = " ".join(inspect.cleandoc(doc or "").split("\n\n")[0].split()).split(". ")[0].rstrip(".")
    return text if len(text) <= 90 else text[:87].rstrip() + "..."


def entries(kind: str) -> list[tuple[str, str]]:
    """(name, one-line description) of every entry of `kind` that a config can use here."""
    from compare.resolve import components  # noqa: PLC0415

    if kind == "models":
        from compare.models import MODELS, list_models  # noqa: PLC0415

        return [(n, f"torchvision.models.{n.partition('.')[2]}, untrained unless args.weights; head sized to the dataset" if n.startswith("torchvision.") else summary(MODELS.get(n), module_first=True)) for n in list_models()]
    if kind == "datasets":
        package = components.dataset_package()
        return [(n, summary(package.DATASETS.get(n))) for n in package.list_datasets()]
    if kind == "transforms":
        from torchvision.transforms import v2  # noqa: PLC0415
        from compare.datasets.transforms import list_transforms  # noqa: PLC0415

        return [(n, summary(getattr(v2, n)) or f"torchvision.transforms.v2.{n}") for n in list_transforms()]
    import torch  # noqa: PLC0415

    namespace = {"losses": torch.nn, "optimizers": torch.optim, "schedulers": torch.optim.lr_scheduler}[kind]
    return [(n, summary(getattr(namespace, n)) or f"{namespace.__name__}.{n}") for n in getattr(components, f"list_{kind}")()]


@app.command("list")
def list_(kind: Annotated[str, typer.Argument(help=f"What to list: {', '.join(KINDS)}.")]):
    """List the names usable in a config, one line each with what it is."""
    try:
        if kind not in KINDS:
            raise CompareError(f"compare list {kind}: nothing of that kind{did_you_mean(kind, KINDS)} (choose from {', '.join(KINDS)})")
        rows = entries(kind)
    except Exception as err:  # noqa: BLE001
        fail(err, debug=False)
    width = max(len(n) for n, _ in rows)
    for name, what in rows:
        typer.echo(f"{name.ljust(width)}  {what}".rstrip())
