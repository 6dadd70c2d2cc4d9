"""`compare run` and `compare resume`: parse, train with signals and progress, print the
leaderboard; errors go to `fail` (runner/cli/app.py)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from compare.cli.app import app, console, fail
from compare.config.schema import PLACES
from compare.errors import EXIT_SOME_FAILED, ConfigError, Problem
from compare.rundir.layout import CONFIG, ERRORS, LEADERBOARD_CSV, LEADERBOARD_MD, PLOTS, REPORT_HTML


def seeds_override(text: str) -> str:
    """`--seeds 0,1,2` -> the override `experiment.seeds=[0, 1, 2]`."""
    try:
        seeds = [int(part) for part in text.split(",")]  # an empty part (0,,1 or 0,1,) is a typo: refused, not skipped
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError([Problem("--seeds", "experiment.seeds", f"expected distinct comma-separated integers like 0,1,2, got {text!r}")])
    return f"experiment.seeds=[{', '.join(map(str, seeds))}]"


def _train(experiment_factory, run_dir, debug: bool, quiet: bool, place: str | None = None, shard=None, **options) -> None:
    """Shared by `run` and `resume`: signals, progress, the leaderboard, exit codes. A signal
    that stops at once (StopNow) goes up to runner/cli/main.py, which prints it."""
    from compare.run import launch  # noqa: PLC0415
    from compare.run.interrupts import Interrupted, graceful_interrupts  # noqa: PLC0415
    from compare.run.progress import Progress, terminal_progress  # noqa: PLC0415

    main = launch.env_rank() == 0
    try:
        with graceful_interrupts() as stop:
            experiment = experiment_factory()
            if launch.restart_count() > 0:  # torchrun restarted the workers (a node or process was lost)
                options["resume"] = (Path(run_dir or experiment.default_run_dir()) / CONFIG).exists()
            placement = _placement(experiment.config, place, shard, nproc=None, dry_run=False)
            result = placement.train(experiment, run_dir, progress=terminal_progress() if main and not quiet else Progress(), stop=stop, argv=sys.argv, **options)
    except Exception as err:  # noqa: BLE001 - mapped to an exit code in one place
        if isinstance(err, Interrupted) and main:
            _print_partial(Path(run_dir or experiment.default_run_dir()))
        fail(err, debug)
    if not main:
        return
    if result.already_finished:
        console.print(f"{result.run_dir} already finished; nothing to resume (its reports were written again)", markup=False)
        return
    from compare.cli.reports import print_board  # noqa: PLC0415
    from compare.report.leaderboard import build  # noqa: PLC0415
    from compare.report.run_data import load_run  # noqa: PLC0415

    board = build([load_run(result.run_dir)])
    board.evidence.notes += [n for n in result.notes if n not in board.evidence.notes]  # what the plots said
    print_board(board, f"{experiment.config.experiment.name}: leaderboard")  # with its evidence lines (the protocol first)
    if experiment.config.report.by == "family":
        from compare.cli.reports import print_families  # noqa: PLC0415
        from compare.report.finalize import family_board  # noqa: PLC0415

        print_families(family_board(load_run(result.run_dir)), f"{experiment.config.experiment.name}: families (docs/tuning.md)")
    console.print(f"run directory: {result.run_dir}", markup=False)
    plots = result.run_dir / PLOTS
    console.print(f"leaderboard: {result.run_dir / LEADERBOARD_MD}" + (f"; plots: {plots}/" if plots.is_dir() else ""), markup=False)
    console.print(f"TensorBoard: compare tensorboard {result.run_dir}", markup=False)
    if (result.run_dir / REPORT_HTML).exists():  # last: the one file to open, or to send
        console.print(f"report: {result.run_dir / REPORT_HTML} (one self-contained file: open it in a browser, or send it)", markup=False)
    if result.some_failed:
        sys.stderr.write(f"warning: some models failed or diverged; see {result.run_dir / ERRORS}\n")
        if not launch.launched():  # under torchrun a non-zero exit would restart the run
            raise typer.Exit(EXIT_SOME_FAILED)
    elif len(result.leaderboard) and result.leaderboard["status"].astype(str).str.contains("diverged").any():
        sys.stderr.write(f"note: some trials of a search diverged: bad points of its space, reported as diverged and counted in the family's trials (exit 0; docs/tuning.md); see {result.run_dir / ERRORS}\n")


def _placement(cfg, place: str | None, shard, nproc: int | None, dry_run: bool):
    """runner/run/placement.py's choice for this config and command line; a refusal names
    `--place` when the command line chose, else the config's experiment.place."""
    from compare.run import launch  # noqa: PLC0415
    from compare.run.placement import choose  # noqa: PLC0415

    where = ("--place", "--place") if place is not None else (cfg.source, "experiment.place")
    return choose(cfg.experiment.place, where, shard, nproc, launch.launched(), dry_run)


def _print_partial(run_dir: Path) -> None:
    """An interrupted run's partial leaderboard (its finished epochs), as `compare leaderboard` shows it."""
    if not (run_dir / LEADERBOARD_CSV).exists():
        return
    from compare.cli.reports import print_board  # noqa: PLC0415
    from compare.report.leaderboard import build  # noqa: PLC0415
    from compare.report.run_data import load_run  # noqa: PLC0415

    run = load_run(run_dir)
    print_board(build([run]), f"{run.config.get('experiment', {}).get('name', run_dir.name)}: partial leaderboard (interrupted; finished epochs only)")


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="Experiment TOML file.")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a key: dotted.key=value (TOML value); model.<name>.key=value for one model.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run directory (default: <experiment.output_dir>/<experiment.name>).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue the run in the run directory from its newest valid checkpoint.")] = False,
    fail_fast: Annotated[bool, typer.Option(help="Stop everything at the first model that fails (default: quarantine it, go on).")] = False,
    seeds: Annotated[Optional[str], typer.Option(help="Repeat the whole pass per seed, e.g. 0,1,2 (sets experiment.seeds).")] = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write RUN_DIR/plots/*.png at the end.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate, build every model and the data, run one batch through each, print the plan; train nothing, write nothing.")] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
    accept_unverified: Annotated[bool, typer.Option("--accept-unverified", help="With --resume: continue from a checkpoint that checkpoints/manifest.json cannot vouch for (missing or unreadable); its zip checksums are still checked.")] = False,
    nproc: Annotated[Optional[int], typer.Option(help="Data parallel over this many processes on this node (starts torchrun's agent; one GPU each, or CPU with gloo).")] = None,
    max_restarts: Annotated[int, typer.Option(help="With --nproc: restart the workers this often after a failure; they resume from the last checkpoint.")] = 0,
    place: Annotated[Optional[str], typer.Option(help="Under torchrun (--nproc): data (every model on every rank, the batch split: DDP) or models (each rank trains its share of the models over the full batches; rank 0 merges; docs/scale-out.md). Sets experiment.place (default data).")] = None,
    shard: Annotated[Optional[str], typer.Option(help="Train only the I-th of N shares of the models (I/N, 1-based; auto or auto/N: from SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX) into RUN_DIR.shard-I-of-N; `compare merge` glues the shards into one run (docs/scale-out.md).")] = None,
):
    """Train every [[model]] of CONFIG in one shared pass over the data; write the run directory."""
    try:
        overrides = (set_ or []) + ([seeds_override(seeds)] if seeds is not None else [])
        if accept_unverified and not resume:
            raise ConfigError([Problem("--accept-unverified", "--accept-unverified", "applies to a resume only: add --resume (or use `compare resume --accept-unverified RUN_DIR`)")])
        if place is not None:
            if place not in PLACES:
                raise ConfigError([Problem("--place", "--place", f"expected {' or '.join(PLACES)}, got {place!r}")])
            overrides.append(f"experiment.place={json.dumps(place)}")
        from compare.run import launch  # noqa: PLC0415 - torch-free
        from compare.run.placement import choose  # noqa: PLC0415 - torch-free
        from compare.run.shards import parse_shard  # noqa: PLC0415 - torch-free

        part = parse_shard(shard) if shard is not None else None
        if place is not None:  # the command line's placement is checked before torch is imported
            choose(place, ("--place", "--place"), part, nproc, launch.launched(), dry_run)
        # Imported here, after the checks of the options: `--help` and a bad `--seeds` need no torch.
        from compare.run.experiment import Experiment  # noqa: PLC0415

        if dry_run:
            from compare.cli.authoring import print_plan  # noqa: PLC0415

            experiment = Experiment.from_toml(config, overrides, shard=part)
            placement = _placement(experiment.config, place, part, nproc, dry_run=True)
            placement.check(experiment.config)
            plan = experiment.dry_run(out)
            print_plan(console, plan)
            if (share := placement.dry_run_shard()) is not None:
                _print_assignment(experiment.config, plan, share)
            return
    except Exception as err:  # noqa: BLE001
        fail(err, debug)
    if nproc is not None:
        worker_args = ["run", str(config), *(f"--set={s}" for s in overrides), *(["--out", str(out)] if out else [])]
        flags = (("--overwrite", overwrite), ("--resume", resume), ("--fail-fast", fail_fast), ("--accept-unverified", accept_unverified), ("--no-plots", not plots), ("--quiet", quiet), ("--debug", debug))
        worker_args += [flag for flag, on in flags if on]
        _launch(lambda: Experiment.from_toml(config, overrides), out, nproc, max_restarts, worker_args, debug, place)
        return
    _train(lambda: Experiment.from_toml(config, overrides, shard=part), out, debug, quiet, place=place, shard=part, overwrite=overwrite, resume=resume, fail_fast=fail_fast, plots=plots, accept_unverified=accept_unverified)


def _print_assignment(cfg, plan, part) -> None:
    """The dry run with --shard: which models this shard trains, and every shard's share."""
    from compare.run.shards import assignment_table, model_cost, plan as assigned  # noqa: PLC0415

    samples = plan.train_samples * plan.epochs
    costs = {m.name: {"cost": model_cost(m.flops_per_sample, m.params, samples)} for m in plan.models}
    for line in assignment_table(assigned(cfg, {n: c["cost"] for n, c in costs.items()}, part), costs):
        console.print(line, markup=False)


def _launch(experiment_factory, out, nproc: int, max_restarts: int, worker_args: list[str], debug: bool, place: str | None) -> None:
    """Check the config once here (one message, not one per worker), then start the workers."""
    from compare.run import launch  # noqa: PLC0415

    try:
        if launch.launched():
            raise ConfigError([Problem("--nproc", "--nproc", "starts torchrun itself; under torchrun, leave it out")])
        experiment = experiment_factory()  # a bad config fails here, before any worker starts
        placement = _placement(experiment.config, place, None, nproc, dry_run=False)
        run_dir = out or experiment.default_run_dir()
        code = launch.launch(nproc, max_restarts, worker_args + placement.worker_args(), run_dir)
    except Exception as err:  # noqa: BLE001
        fail(err, debug)
    if code == EXIT_SOME_FAILED:
        sys.stderr.write(f"warning: some models failed or diverged; see {run_dir / ERRORS}\n")
    raise typer.Exit(code)


@app.command()
def resume(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (holds config.toml and checkpoints/).")],
    fail_fast: Annotated[bool, typer.Option(help="Stop everything at the first model that fails.")] = False,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write RUN_DIR/plots/*.png at the end.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    accept_unverified: Annotated[bool, typer.Option("--accept-unverified", help="Continue from a checkpoint that checkpoints/manifest.json cannot vouch for (missing or unreadable); its zip checksums are still checked.")] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
):
    """Continue RUN_DIR from its newest valid checkpoint, with the config it was started with."""
    from compare.run import launch  # noqa: PLC0415 - torch-free
    from compare.run.experiment import Experiment  # noqa: PLC0415
    from compare.run.shards import placed_shards  # noqa: PLC0415 - torch-free

    ranks = len(placed_shards(run_dir)) if not (run_dir / CONFIG).exists() else 0
    if ranks and not launch.launched():  # --place models stopped before its merge: torchrun again, one worker a rank
        flags = (("--fail-fast", fail_fast), ("--accept-unverified", accept_unverified), ("--no-plots", not plots), ("--quiet", quiet), ("--debug", debug))
        try:
            Experiment.from_run_dir(run_dir)  # a bad config fails here, before any worker starts
            code = launch.launch(ranks, 0, ["resume", str(run_dir), *(flag for flag, on in flags if on)], run_dir)
        except Exception as err:  # noqa: BLE001
            fail(err, debug)
        if code == EXIT_SOME_FAILED:
            sys.stderr.write(f"warning: some models failed or diverged; see {run_dir / ERRORS}\n")
        raise typer.Exit(code)
    _train(lambda: Experiment.from_run_dir(run_dir), run_dir, debug, quiet, place="models" if ranks else None, resume=True, fail_fast=fail_fast, plots=plots, accept_unverified=accept_unverified)


@app.command()
def merge(
    shard_dirs: Annotated[list[Path], typer.Argument(help="The run directories of every shard (`compare run --shard I/N`).")],
    out: Annotated[Path, typer.Option(help="The merged run directory.")],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory (one of compare's).")] = False,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write RUN/plots/*.png.")] = True,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
):
    """Glue the shards of one comparison into ONE run directory, as the unsharded run writes it."""
    try:
        from compare.cli.reports import print_board  # noqa: PLC0415
        from compare.run.merge import merge_shards  # noqa: PLC0415

        board = merge_shards(shard_dirs, out, overwrite=overwrite, plots=plots)
    except Exception as err:  # noqa: BLE001
        fail(err, debug)
    print_board(board, f"{len(shard_dirs)} shards merged: leaderboard")
    console.print(f"run directory: {out}", markup=False)
