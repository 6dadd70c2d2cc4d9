"""An experiment: build everything from a validated config, run the shared pass, write outputs.

    result = Experiment.from_toml("experiments/digits.toml", overrides=["experiment.epochs=2"]).run()
    result.leaderboard       # pandas DataFrame, best first
    result.run_dir           # config.toml, env.json, history.csv, leaderboard.csv/.md, plots/, tb/<model>/
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
import pandas as pd
import torch
from torch.utils.data import DataLoader

from models import create_model
from runner import components, tomlio
from runner.config import Config, ModelConfig, derive_seed, load_config
from runner.engine import evaluate, train_one_epoch
from runner.envinfo import environment
from runner.finalize import finalize_run
from runner.flops import forward_flops_per_sample
from runner.errors import RunDirError
from runner.progress import Progress
from runner.rng import RngStream
from runner.sinks import HistorySink, TensorBoardSink, write_csv_atomic, write_predictions
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


def build_slot(cfg: Config, m: ModelConfig, experiment_seed: int, input_shape, num_classes: int, device: torch.device) -> Slot:
    """Seed the model's own stream, build the model in it; the stream continues from there."""
    seed = cfg.model_seed(m, experiment_seed)
    rng = RngStream(seed, device)
    with rng.active():
        model = create_model(m.arch, input_shape, num_classes, **m.args).to(device)
    optimizer = components.create_optimizer(m.optimizer.name, model.parameters(), m.optimizer.args)
    scheduler = None
    if m.scheduler is not None:
        scheduler = components.create_scheduler(m.scheduler.name, optimizer, m.scheduler.args)
    info = {
        "model": m.name,
        "arch": m.arch,
        "params": sum(p.numel() for p in model.parameters()),
        "flops_per_sample": forward_flops_per_sample(model, input_shape, device),
        "optimizer": m.optimizer.name,
        "lr": m.optimizer.args.get("lr"),
        "scheduler": m.scheduler.name if m.scheduler else None,
    }
    return Slot(m.name, model, optimizer, scheduler, m.scheduler.interval if m.scheduler else "epoch", rng, device, info)


def prepare_run_dir(run_dir: Path, overwrite: bool) -> None:
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise RunDirError(f"{run_dir} already holds a run; pass --overwrite to replace it or --out to choose another directory")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


class Experiment:
    def __init__(self, config: Config):
        self.config = config

    @classmethod
    def from_toml(cls, path: str | Path, overrides: list[str] = ()) -> "Experiment":
        return cls(load_config(path, list(overrides)))

    def default_run_dir(self) -> Path:
        return Path(self.config.experiment.output_dir) / self.config.experiment.name

    def run(
        self,
        run_dir: str | Path | None = None,
        overwrite: bool = False,
        progress: Progress | None = None,
        argv: list[str] | None = None,
        plots: bool = True,
    ) -> RunResult:
        cfg, d = self.config, self.config.data
        run_dir = Path(run_dir) if run_dir is not None else self.default_run_dir()
        device = resolve_device(cfg.experiment.device)
        progress = progress or Progress()

        # Build what can fail on bad input before touching the disk: a bad run leaves nothing.
        adapter = components.dataset_package().create_dataset(d.dataset, root=d.root, download=d.download, augment=d.augment, **d.args)
        data = adapter.prepare(d.subset, d.test_subset, seed=cfg.experiment.seed)
        loss_fn = components.create_loss(cfg.loss.name, cfg.loss.args)
        first = [build_slot(cfg, m, cfg.seeds[0], data.input_shape, data.num_classes, device) for m in cfg.models]

        prepare_run_dir(run_dir, overwrite)
        (run_dir / "config.toml").write_text(tomlio.dumps(cfg.to_dict()))
        env = environment(device, argv) | {"train_samples": len(data.train), "test_samples": len(data.test), "classes": data.classes}
        (run_dir / "env.json").write_text(json.dumps(env, indent=2) + "\n")
        write_csv_atomic(pd.DataFrame([s.info for s in first]), run_dir / "models.csv")

        history = HistorySink(run_dir)
        for i, seed in enumerate(cfg.seeds):
            slots = first if i == 0 else [build_slot(cfg, m, seed, data.input_shape, data.num_classes, device) for m in cfg.models]
            self._one_pass(seed, slots, data, loss_fn, device, run_dir, history, progress)
        # Reports read the run directory back, as `compare leaderboard` / `compare plot` do.
        board = finalize_run(run_dir, plots=plots)
        return RunResult(run_dir, board.table, history.frame())

    def _one_pass(self, seed: int, slots: list[Slot], data, loss_fn, device, run_dir: Path, history: HistorySink, progress: Progress) -> None:
        """Train every slot for all epochs on the data order of `seed`; write its outputs."""
        cfg, d = self.config, self.config.data
        workers = {"num_workers": d.num_workers, "pin_memory": device.type == "cuda", "persistent_workers": d.num_workers > 0}
        train_loader = DataLoader(data.train, batch_size=d.batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed), **workers)
        # Own generator: iterating the shared test loader must not draw from any model's stream.
        test_loader = DataLoader(data.test, batch_size=d.eval_batch_size, shuffle=False, generator=torch.Generator().manual_seed(seed), **workers)
        data_rng = RngStream(derive_seed(seed, DATA_STREAM), torch.device("cpu"))
        suffix = f"/seed_{seed}" if len(cfg.seeds) > 1 else ""
        tensorboard = TensorBoardSink(run_dir / "tb", {s.name: s.name + suffix for s in slots})
        best: dict[str, tuple[float, int, torch.Tensor]] = {}
        try:
            for epoch in range(1, cfg.experiment.epochs + 1):
                with progress.epoch(epoch, cfg.experiment.epochs, len(train_loader), seed if len(cfg.seeds) > 1 else None) as on_step:
                    data_seconds = train_one_epoch(slots, train_loader, loss_fn, device, data_rng, on_step)
                targets = evaluate(slots, test_loader, loss_fn, device)
                records = []
                for slot in (s for s in slots if s.live):
                    record = slot.end_epoch(epoch) | {"seed": seed, "model_seed": slot.rng.seed, "data_time_s": data_seconds}
                    if epoch == cfg.experiment.epochs:
                        record["status"] = slot.status = DONE
                    records.append(record)
                    if slot.predictions is not None and record["test_acc"] > best.get(slot.name, (-1.0,))[0]:
                        best[slot.name] = (record["test_acc"], epoch, slot.predictions)
                history.write(records)
                tensorboard.write(records)
                if cfg.experiment.grad_histograms:
                    for slot in slots:
                        tensorboard.write_gradients(slot.name, epoch, slot.model)
            for slot in slots:
                if slot.predictions is not None:
                    write_predictions(run_dir, slot.name, seed, targets, final=(cfg.experiment.epochs, slot.predictions), best=best[slot.name][1:])
        finally:
            tensorboard.close()
