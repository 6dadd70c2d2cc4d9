"""An experiment: build everything from a validated config, run the shared pass, write outputs.

    result = Experiment.from_toml("experiments/digits.toml", overrides=["experiment.epochs=2"]).run()
    result.leaderboard       # pandas DataFrame, best first
    result.run_dir           # config.toml, env.json, history.csv, leaderboard.csv, tb/<model>/

    Experiment({"data": {"dataset": MyData}, "model": [{"name": "mine", "arch": MyNet}]}).run()
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
import pandas as pd
import torch
from torch.utils.data import DataLoader

from runner import components, tomlio
from runner.config import Config, ModelConfig, config_from_dict, load_config
from runner.engine import evaluate, train_one_epoch
from runner.envinfo import environment
from runner.errors import CompareError, RunDirError
from runner.progress import Progress
from runner.references import describe
from runner.report import leaderboard
from runner.rng import RngStream
from runner.sinks import HistorySink, TensorBoardSink, write_csv_atomic
from runner.slot import DONE, Slot

DATA_STREAM = "<data>"  # name the data pipeline's random stream is derived from


@dataclass
class RunResult:
    run_dir: Path
    leaderboard: pd.DataFrame
    history: pd.DataFrame


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunDirError(f"experiment.device: {spec!r} asked for, but torch sees no CUDA device")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RunDirError(f"experiment.device: {spec!r} asked for, but MPS is not available")
    return device


def build_slot(cfg: Config, m: ModelConfig, input_shape, num_classes: int, device: torch.device) -> Slot:
    """Seed the model's own stream, build the model in it; the stream continues from there."""
    seed = cfg.model_seed(m)
    rng = RngStream(seed, device)
    with rng.active():
        model = components.build_model(m.arch, m.args, input_shape, num_classes, cfg.base_dir, m.name).to(device)
    optimizer = components.create_optimizer(m.optimizer.name, model.parameters(), m.optimizer.args)
    scheduler = None
    if m.scheduler is not None:
        scheduler = components.create_scheduler(m.scheduler.name, optimizer, m.scheduler.args)
    info = {
        "model": m.name,
        "arch": describe(m.arch),
        "params": sum(p.numel() for p in model.parameters()),
        "optimizer": m.optimizer.name,
        "seed": seed,
    } | {f"sweep.{key}": value for key, value in m.sweep_values.items()}  # leaderboard columns
    return Slot(m.name, model, optimizer, scheduler, m.scheduler.interval if m.scheduler else "epoch", rng, device, info)


def prepare_run_dir(run_dir: Path, overwrite: bool) -> None:
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise RunDirError(f"{run_dir} already holds a run; pass --overwrite to replace it or --out to choose another directory")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


class Experiment:
    def __init__(self, config: Config | dict, overrides: list[str] = ()):
        """`config`: a validated Config, or a dict with the TOML file's schema, in which `arch`,
        `data.dataset` and `loss.name` may also be live Python objects."""
        if isinstance(config, dict):
            config = config_from_dict(config, source="<dict>", overrides=list(overrides))
        elif overrides:
            raise CompareError("overrides apply to a dict or a TOML file; this config is already validated")
        self.config = config

    @classmethod
    def from_toml(cls, path: str | Path, overrides: list[str] = ()) -> "Experiment":
        return cls(load_config(path, list(overrides)))

    def default_run_dir(self) -> Path:
        return Path(self.config.experiment.output_dir) / self.config.experiment.name

    def dry_run(self, run_dir: str | Path | None = None):
        """Build every model and the data, one forward pass each, and return the plan; trains
        nothing and writes nothing (runner/dryrun.py)."""
        from runner.dryrun import make_plan  # noqa: PLC0415

        return make_plan(self.config, Path(run_dir) if run_dir is not None else self.default_run_dir())

    def run(
        self,
        run_dir: str | Path | None = None,
        overwrite: bool = False,
        progress: Progress | None = None,
        argv: list[str] | None = None,
    ) -> RunResult:
        cfg = self.config
        progress = progress or Progress()
        run_dir = Path(run_dir) if run_dir is not None else self.default_run_dir()
        device = resolve_device(cfg.experiment.device)

        # Build everything before touching the disk: bad input leaves nothing behind.
        d = cfg.data
        data = components.load_dataset(d, cfg.base_dir, seed=cfg.experiment.seed)
        loss_fn = components.build_loss(cfg.loss, cfg.base_dir, data.num_classes)
        slots = [build_slot(cfg, m, data.input_shape, data.num_classes, device) for m in cfg.models]
        pin = device.type == "cuda"
        workers = {"num_workers": d.num_workers, "pin_memory": pin, "persistent_workers": d.num_workers > 0}
        train_loader = DataLoader(
            data.train, batch_size=d.batch_size, shuffle=True,
            generator=torch.Generator().manual_seed(cfg.experiment.seed), **workers,
        )
        # Own generator: iterating the shared test loader must not draw from any model's stream.
        test_loader = DataLoader(data.test, batch_size=d.eval_batch_size, shuffle=False, generator=torch.Generator().manual_seed(cfg.experiment.seed), **workers)
        data_rng = RngStream(cfg.experiment.seed, torch.device("cpu"))

        prepare_run_dir(run_dir, overwrite)
        (run_dir / "config.toml").write_text(tomlio.dumps(cfg.to_dict()))
        env = environment(device, argv) | {"train_samples": len(data.train), "test_samples": len(data.test), "classes": data.classes}
        (run_dir / "env.json").write_text(json.dumps(env, indent=2) + "\n")

        history = HistorySink(run_dir)
        sinks = [history, TensorBoardSink(run_dir / "tb", [s.name for s in slots])]
        try:
            for epoch in range(1, cfg.experiment.epochs + 1):
                records = self._epoch(epoch, slots, train_loader, test_loader, loss_fn, device, data_rng, progress)
                for sink in sinks:
                    sink.write(records)
        finally:
            for sink in sinks:
                sink.close()
        for slot in slots:
            slot.status = DONE
        frame = history.frame()
        board = leaderboard(frame, pd.DataFrame([s.info | {"status": s.status} for s in slots]))
        write_csv_atomic(board, run_dir / "leaderboard.csv")
        return RunResult(run_dir, board, frame)

    def _epoch(self, epoch, slots, train_loader, test_loader, loss_fn, device, data_rng, progress) -> list[dict]:
        with progress.epoch(epoch, self.config.experiment.epochs, len(train_loader)) as on_step:
            data_seconds = train_one_epoch(slots, train_loader, loss_fn, device, data_rng, on_step)
        evaluate(slots, test_loader, loss_fn, device)
        records = [slot.end_epoch(epoch) for slot in slots if slot.live]
        for record in records:
            record |= {"seed": self.config.experiment.seed, "data_time_s": data_seconds}
        return records
