"""An experiment: build everything from a validated config, run one shared pass per seed,
write outputs, checkpoint, and resume.

    result = Experiment.from_toml("experiments/digits.toml", overrides=["experiment.epochs=2"]).run()
    result.leaderboard       # pandas DataFrame, best first
    result.run_dir           # config.toml, env.json, history.csv, leaderboard.csv/.md, plots/, tb/<model>/, ...

    Experiment({"data": {"dataset": MyData}, "model": [{"name": "mine", "arch": MyNet}]}).run()
"""
from __future__ import annotations

import json
import tomllib
import warnings
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from compare import atomic
from compare.resolve import components, metric_refs
from compare.assemble.fusing import fused_labels
from compare.assemble.preflight import check_batch_bytes, check_data_and_models, check_sample_shapes, check_sharding
from compare.assemble.slots import build_slots, resolve_device
from compare.config import tomlio
from compare.config.schema import Config
from compare.assemble.validate import config_from_dict, load_config
from compare.data.loaders import load_data
from compare.data.splits import split_facts
from compare.metrics.builtin import defaults, rank_metric
from compare.engine.slot import Slot
from compare.errors import CompareError, CompareNote, CompareWarning, ConfigError, Problem, RunDirError, StopNow
from compare.report.finalize import finalize_run
from compare.report.leaderboard import failures, searched_families
from compare.run.checkpoint import Checkpointer, recorded_base_dir, recorded_config
from compare.engine.dist import Dist
from compare.run.distributed import session
from compare.run.dryrun import make_plan
from compare.run.envinfo import environment
from compare.run.interrupts import Interrupted, StopFlag, resume_command
from compare.run.progress import Progress
from compare.rundir import layout
from compare.rundir.guard import check_path, LINKED, claim_run_dir, nothing_to_resume, default_run_dir, holds_a_run, missing_folders, release_claim
from compare.run.shared_pass import Outputs, SharedPass
from compare.run.shards import Shard, config_hash, placed_shards, plan, probe_costs, read_shard, refuse_race, shard_config
from compare.run.predictions import kept_predictions, repair_predictions
from compare.run.weights import repair_weights, unrepairable
from compare.run.sinks import HistorySink


@dataclass
class RunResult:
    run_dir: Path
    leaderboard: pd.DataFrame
    history: pd.DataFrame
    already_finished: bool = False  # resume found nothing left to do
    notes: list = field(default_factory=list)  # the reports' notes, plots not drawn included
    searched: set = field(default_factory=set)  # families a search sampled: their diverged trials are results

    @property
    def some_failed(self) -> bool:
        """Exit 3: a model failed, or diverged outside a search (runner/report/leaderboard.py `failures`)."""
        return bool(failures(self.leaderboard, self.searched))


def config_differences(saved: dict, current: dict, prefix: str = "", form: str = "{key} ({a!r} -> {b!r})") -> list[str]:
    """Dotted keys whose values differ between two resolved configs, each written as `form`."""
    keys = sorted(set(saved) | set(current), key=str)
    out = []
    for key in keys:
        a, b = saved.get(key), current.get(key)
        where = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, where + ".", form)
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(isinstance(v, dict) for v in a + b):
            for i, (x, y) in enumerate(zip(a, b)):
                out += config_differences(x, y, f"{where}[{i}].", form)
        elif a != b:
            out.append(form.format(key=where, a=a, b=b))
    return out


class Experiment:
    def __init__(self, config: Config | dict, overrides: list[str] = (), shard: Shard | None = None, looks=None):
        """`config`: a validated Config, or a dict with the TOML file's schema, in which `arch`,
        `data.dataset` and `loss.name` may also be live Python objects. `shard`: train only
        that share of the models (runner/run/shards.py) into a run directory of its own.
        `looks`: where a shard's race meets the other shards' models (--place models'
        RaceLooks, runner/run/ranks.py); without it a shard cannot race."""
        if isinstance(config, dict):
            config = config_from_dict(config, source="<dict>", overrides=list(overrides))
        elif overrides:
            raise CompareError("overrides apply to a dict or a TOML file; this config is already validated")
        self.config, self.shard, self.looks = config, shard, looks

    @classmethod
    def from_toml(cls, path: str | Path, overrides: list[str] = (), shard: Shard | None = None) -> "Experiment":
        return cls(load_config(path, list(overrides)), shard=shard)

    @classmethod
    def from_run_dir(cls, run_dir: str | Path) -> "Experiment":
        """The run in `run_dir`, with its config.toml; without one, the config its checkpoints'
        manifest records (written back on resume), or, for a --place models run stopped before
        its merge, its ranks' config."""
        run_dir = Path(run_dir)
        path = run_dir / layout.CONFIG
        if path.is_symlink():  # its target's TOML errors would be reported as the run's
            raise RunDirError(f"{path} {LINKED}")
        # Relative references resolve from the folder of the config the run started from.
        if path.exists():
            return cls(load_config(path, base_dir=recorded_base_dir(run_dir)), shard=read_shard(run_dir))
        ranks = placed_shards(run_dir)
        if ranks:  # `compare resume` restarts them under torchrun (runner/cli/run.py); config.toml leaves out `place`
            return cls(load_config(ranks[0] / layout.CONFIG, ['experiment.place="models"'], base_dir=recorded_base_dir(ranks[0])))
        text = recorded_config(run_dir)
        if text is None:
            raise RunDirError(nothing_to_resume(run_dir))
        warnings.warn(f"{path} is missing: resuming with the config {layout.CHECKPOINTS}/{layout.MANIFEST} records (written back as {layout.CONFIG})", CompareNote, stacklevel=2)
        source = str(run_dir / layout.CHECKPOINTS / layout.MANIFEST)
        return cls(config_from_dict(tomllib.loads(text), source=source, base_dir=recorded_base_dir(run_dir)), shard=read_shard(run_dir))

    def default_run_dir(self) -> Path:
        path = default_run_dir(self.config.experiment.output_dir, self.config.experiment.name)
        return path.with_name(path.name + self.shard.suffix) if self.shard is not None else path

    def dry_run(self, run_dir: str | Path | None = None):
        """Build every model and the data, one forward pass each, and return the plan; trains
        nothing and writes nothing (runner/run/dryrun.py)."""
        return make_plan(self.config, Path(run_dir) if run_dir is not None else self.default_run_dir())

    def run(
        self,
        run_dir: str | Path | None = None,
        overwrite: bool = False,
        resume: bool = False,
        progress: Progress | None = None,
        fail_fast: bool = False,
        stop: StopFlag | None = None,
        argv: list[str] | None = None,
        plots: bool = True,
        accept_unverified: bool = False,
        single: bool = False,
    ) -> RunResult:
        """Train (or, with `resume`, continue from the newest valid checkpoint). `stop` is set
        by a signal handler: the run then checkpoints after the current step and raises
        `Interrupted` (see compare.run.interrupts). Under torchrun this runs on every rank, data
        parallel; rank 0 alone touches the run directory. `accept_unverified`: resume from a
        checkpoint no manifest vouches for (runner/run/checkpoint.py). `single`: one process's
        run even under torchrun (a rank's share of `--place models`, runner/run/ranks.py)."""
        if self.shard is not None and self.looks is None:
            refuse_race(self.config)
        with session(self.config.experiment.device) if not single else nullcontext(Dist()) as dist:
            if self.shard is not None and dist.enabled:
                raise ConfigError([Problem("--shard", "--shard", "one process per shard: leave out torchrun (--nproc N --place models spreads the models over ranks)")])
            return self._run(dist, run_dir, overwrite, resume, progress, fail_fast, stop, argv, plots, accept_unverified)

    def _run(self, dist: Dist, run_dir, overwrite, resume, progress, fail_fast, stop, argv, plots, accept_unverified=False) -> RunResult:
        run_dir = Path(run_dir) if run_dir is not None else self.default_run_dir()
        shard = self._recorded_shard(run_dir, dist) if resume else self.shard
        cfg = shard_config(self.config, shard.models) if shard is not None and shard.models else self.config
        device = dist.device if dist.enabled else resolve_device(cfg.experiment.device)
        checkpointer = Checkpointer(run_dir, cfg, dist, accept_unverified)
        # Rank 0 reads the checkpoint and hands it to the others: only its node needs the run dir.
        checkpoint = dist.from_main(lambda: self._resume_point(run_dir, checkpointer)) if resume else None
        if checkpoint is not None and checkpoint.get("world_size", 1) != dist.world:
            raise RunDirError(f"{run_dir} was checkpointed by {checkpoint.get('world_size', 1)} process(es); resume it with as many (now {dist.world})")
        if checkpoint is not None and checkpoint["finished"]:
            board = dist.from_main(lambda: self._finish_again(run_dir, checkpoint, plots, stop))
            return RunResult(run_dir, board, HistorySink(run_dir, checkpoint["history"], write_file=False).frame(), already_finished=True, searched=searched_families(self.config.families))

        # Start-up (the data, the models: up to a minute on a loaded machine). A fresh run in a
        # folder that holds no run claims it and writes config.toml first, so a kill or a signal
        # from here on leaves a run `compare resume` starts; bad input found here takes it back.
        lock, made = ExitStack(), None
        if checkpoint is None:
            made = dist.from_main(lambda: self._claim_early(run_dir, lock, overwrite or resume))
        stop = stop if stop is not None else StopFlag()
        after = f"{resume_command(run_dir)} starts it" if made is not None or resume else "nothing was written"
        stop.at_once = f"stopped at once in start-up, before training; {after}"
        try:
            if stop:  # a signal while the config was read
                raise StopNow(stop.signum, stop.at_once)
            data = load_data(cfg, device)
            if shard is not None and not shard.models:  # assigned from the config (and the data's shape) alone
                shard = plan(self.config, {n: c["cost"] for n, c in probe_costs(self.config, data).items()}, shard)
                cfg = shard_config(self.config, shard.models)
                checkpointer = Checkpointer(run_dir, cfg, dist, accept_unverified)
            check_sample_shapes(cfg, data)
            check_batch_bytes(cfg, data)  # a transform that makes samples huge: refused before a batch is collated
            loss_fn = components.build_loss(cfg.loss, cfg.base_dir, data.num_classes)
            if isinstance(loss_fn, torch.nn.Module):  # its tensor arguments (class weights) where the batches go
                loss_fn.to(device)
            first_seed = checkpoint["seed_index"] if checkpoint else 0
            fused = checkpoint.get("fused") if checkpoint else None  # a resumed run forms the same fused groups

            def build(seed: int) -> list[Slot]:
                return build_slots(cfg, seed, data, device, dist, fail_fast, loss_fn, fused)

            slots = build(cfg.seeds[first_seed])
            fused = fused_labels(slots)  # decided once per run: every seed fuses the same models
            check_data_and_models(cfg, data, slots)
            check_sharding(cfg, data, dist.world)
        except BaseException as err:
            lock.close()
            if made is not None and not resume and dist.main and isinstance(err, Exception):  # bad input leaves nothing
                release_claim(run_dir, made)
            raise

        def claim() -> None:
            """Rank 0's: claim the run directory (runner/rundir/guard.py: checked, locked,
            marked) for the run's lifetime, then write the run's static facts."""
            try:
                if made is None:  # not claimed in start-up
                    lock.enter_context(claim_run_dir(run_dir, fresh=checkpoint is None, overwrite=overwrite or resume))
                if checkpoint is not None and not (run_dir / layout.CONFIG).exists():  # deleted: the manifest's copy
                    atomic.write_text(run_dir / layout.CONFIG, tomlio.dumps(self.config.to_dict()))
                if checkpoint is None:
                    atomic.write_text(run_dir / layout.CONFIG, tomlio.dumps(self.config.to_dict()))
                    sharded = {"shard": shard.record(config_hash(self.config))} if shard is not None else {}
                    if sharded:
                        atomic.write_text(run_dir / layout.SHARD, json.dumps(sharded["shard"], indent=1) + "\n")
                    atomic.write_text(run_dir / layout.ENV, json.dumps(environment(device, argv) | {"world_size": dist.world, "place": cfg.experiment.place} | split_facts(data) | task_facts(cfg, slots) | sharded, indent=2) + "\n")
                    if data.val_indices is not None:
                        atomic.write_csv(run_dir / layout.VAL_INDICES, pd.DataFrame({"train_index": data.val_indices}))
                    models = pd.DataFrame([s.info for s in slots])
                    models["flops_per_sample"] = ["n/a" if pd.isna(v) else int(v) for v in models["flops_per_sample"]]  # n/a: not counted (a note said why)
                    atomic.write_csv(run_dir / layout.MODELS_CSV, models)
            except BaseException:
                lock.close()
                raise

        dist.from_main(claim)
        with lock:
            dist.from_main(lambda: checkpointer.settle() if checkpoint is not None else checkpointer.start(cfg.base_dir, tomlio.dumps(self.config.to_dict())))
            stop.at_once = None  # training: a signal now checkpoints first
            if checkpoint is not None:  # predictions of finished seeds a kill or an edit damaged
                dist.from_main(lambda: repair_outputs(run_dir, checkpoint, cfg))
            history = HistorySink(run_dir, checkpoint["history"] if checkpoint else None, write_file=dist.main)
            checkpointer.history, checkpointer.fused = history, fused
            checkpointer.kept = dict(checkpoint.get("predictions") or {}) if checkpoint else {}
            checkpointer.kept_weights = dict(checkpoint.get("weights") or {}) if checkpoint else {}
            out = Outputs(run_dir, history, checkpointer, progress=progress or Progress(), stop=stop,
                          checkpoint_every_steps=cfg.experiment.checkpoint_every_steps, grad_histograms=cfg.experiment.grad_histograms)
            try:
                for index in range(first_seed, len(cfg.seeds)):
                    seed = cfg.seeds[index]
                    shared = SharedPass(cfg, seed, slots if index == first_seed else build(seed), data, loss_fn, device, dist, self.looks)
                    if checkpoint is not None and index == first_seed and checkpoint["pass"] is not None:
                        shared.load_state_dict(checkpoint["pass"])
                        torch.set_rng_state(checkpoint["global_rng"])
                        if dist.enabled:  # every rank takes back its own streams and partial sums
                            shared.load_rank_state(checkpoint["ranks"][dist.rank])
                    shared.run(out)
                    checkpointer.end_seed(index, kept_predictions(shared), shared.weights)
                    if stop:  # a signal during the seed's last evaluation or its predictions
                        done = "training finished" if index + 1 == len(cfg.seeds) else f"seed {seed} finished"
                        raise Interrupted(stop.signum, f"{done} and checkpointed; {resume_command(run_dir)} goes on from there")
            except Interrupted:
                if dist.main and not history.frame().empty:
                    finalize_run(run_dir, plots=False)  # the partial leaderboard
                raise
            # Reports read the run directory back, as `compare leaderboard` / `compare plot` do;
            # only rank 0 writes (and reads) them.
            reports = self._reports(run_dir, plots, stop) if dist.main else None
        board = reports.table if reports is not None else pd.DataFrame()
        return RunResult(run_dir, board, history.frame(), notes=list(reports.evidence.notes) if reports is not None else [], searched=searched_families(self.config.families))

    def _finish_again(self, run_dir: Path, checkpoint: dict, plots: bool, stop: StopFlag | None) -> pd.DataFrame:
        """A finished run resumed: its reports again, from the checkpoint's history (it is the
        copy a kill or a full disk cannot have cut short) and the predictions. The directory is
        claimed as for any resume (checked, locked)."""
        with claim_run_dir(run_dir, fresh=False):
            if not (run_dir / layout.CONFIG).exists():  # deleted: the config this resume was given
                atomic.write_text(run_dir / layout.CONFIG, tomlio.dumps(self.config.to_dict()))
            HistorySink(run_dir, checkpoint["history"]).write([])
            repair_outputs(run_dir, checkpoint, self.config)
            return self._reports(run_dir, plots, stop).table

    def _reports(self, run_dir: Path, plots: bool, stop: StopFlag | None):
        """finalize_run; a signal now stops it at once (the finished checkpoint is written, and a
        resume writes the reports again), a full disk is the user's to fix."""
        if stop is not None:
            stop.at_once = f"training finished and checkpointed; `compare resume {run_dir}` writes the reports"
        try:
            return finalize_run(run_dir, plots=plots)
        except OSError as err:
            if not atomic.is_disk_full(err):
                raise
            raise RunDirError(f"no space left on device writing the reports of {run_dir}; training finished and is checkpointed: free some space, then `compare resume {run_dir}`") from None
        finally:
            if stop is not None:
                stop.at_once = None

    def _claim_early(self, run_dir: Path, lock: ExitStack, overwrite: bool) -> list[Path] | None:
        """Rank 0's, before start-up: claim a folder that holds no run and write config.toml;
        the folders it created (None: the folder holds a run, claimed once start-up is done)."""
        check_path(run_dir)  # a path the OS refuses (too long, a link, a file) is one line before anything is looked at
        if holds_a_run(run_dir):
            return None
        made = missing_folders(run_dir)
        lock.enter_context(claim_run_dir(run_dir, fresh=True, overwrite=overwrite))
        try:
            atomic.write_text(run_dir / layout.CONFIG, tomlio.dumps(self.config.to_dict()))
            if self.shard is not None:  # a resume after a kill in start-up trains the same share
                atomic.write_text(run_dir / layout.SHARD, json.dumps(self.shard.record(config_hash(self.config)), indent=1) + "\n")
        except BaseException:
            lock.close()
            raise
        return made

    def _recorded_shard(self, run_dir: Path, dist: Dist) -> Shard | None:
        """On resume: the shard the run directory records (its models as assigned then); a
        different --shard, or none for a shard's directory, is refused."""
        recorded = dist.from_main(lambda: read_shard(run_dir) if run_dir.is_dir() else None)
        mine = self.shard
        if recorded is None and not (run_dir / layout.CONFIG).exists():
            return mine  # nothing to resume there: _resume_point says so
        if (recorded is None) != (mine is None) or (mine is not None and (mine.index, mine.count) != (recorded.index, recorded.count)):
            said = f"shard {recorded.label}" if recorded is not None else "no shard"
            raise RunDirError(f"cannot resume {run_dir}: it holds {said}, but this run asks for {f'shard {mine.label}' if mine else 'no shard'}; resume it with `compare resume {run_dir}`")
        return recorded if recorded is None or recorded.models else mine

    def _resume_point(self, run_dir: Path, checkpointer: Checkpointer) -> dict | None:
        """The checkpoint to continue from; None when the run never reached its first one."""
        if not run_dir.is_dir() or not any(run_dir.iterdir()):
            raise RunDirError(f"nothing to resume in {run_dir}: it holds no run; leave out --resume to start one there")
        saved_config = run_dir / layout.CONFIG
        if saved_config.is_symlink():
            raise RunDirError(f"{saved_config} {LINKED}")
        if not saved_config.exists():  # deleted: the copy the manifest records, else the checkpoint's models alone
            recorded = recorded_config(run_dir)
            if recorded is None and not (run_dir / layout.CHECKPOINTS).is_dir():
                raise RunDirError(nothing_to_resume(run_dir))
            saved, against = (tomllib.loads(recorded) if recorded is not None else None), f"{layout.CHECKPOINTS}/{layout.MANIFEST}"
        else:
            try:
                saved, against = tomllib.loads(saved_config.read_text()), layout.CONFIG
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
                raise RunDirError(f"{saved_config} is damaged ({err}); nothing was deleted; to start over, run the config with --overwrite") from None
        differences = config_differences(saved, self.config.to_dict()) if saved is not None else []
        if differences:
            raise RunDirError(f"cannot resume {run_dir}: the config differs from its {against} in {', '.join(differences)}")
        return checkpointer.load()


def repair_outputs(run_dir: Path, checkpoint: dict, cfg: Config) -> None:
    """On resume: prediction and weight files a kill, a disk or an edit damaged, rebuilt from the
    checkpoint (runner/run/predictions.py, runner/run/weights.py); a damaged weights file it
    holds no copy of is named in a warning (a later `init` would load it)."""
    repair_predictions(run_dir, checkpoint, cfg.report.select)
    rebuilt = repair_weights(run_dir, checkpoint, len(cfg.seeds) > 1)
    for line in unrepairable(run_dir, [m.name for m in cfg.models], rebuilt):
        warnings.warn(f"{line}, and the checkpoint holds no copy (it predates kept weights): delete it, or rerun with --overwrite", CompareWarning, stacklevel=2)


def task_facts(cfg: Config, slots: list) -> dict:
    """What env.json records of the task: the report reads it to pick metrics and directions."""
    task = slots[0].task if slots and slots[0].task is not None else None
    if task is None:
        return {}
    metrics = metric_refs.metric_names(cfg.report.metrics, cfg.base_dir) or defaults(task.kind, task.width)
    rank = rank_metric(cfg.report.rank_by, task.kind, metrics)
    own = {metric_refs.resolve_metric(r, cfg.base_dir).name: r for r in cfg.report.metrics or [] if metric_refs.is_metric_reference(r)}
    facts = {"task": {"kind": task.kind, "width": task.width, "bytes_per_sample": task.bytes_per_sample()}, "metrics": metrics, "rank_by": rank}
    return facts | ({"user_metrics": own, "references_from": str(cfg.base_dir.resolve())} if own else {})
