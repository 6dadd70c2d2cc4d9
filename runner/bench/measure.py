"""`compare bench`: the same training work timed in several modes, in one process,
interleaved and repeated, so the ratios between modes are measured under the same conditions.

    for repeat in range(repeats):
        for mode in modes:       # fresh models from the same seed, a fresh DataLoader
            train `warmup` steps (not timed), then time `steps` steps

Every mode except `loop` runs the runner's own pieces (load_dataset, build_slots, SharedPass's
loader and data stream, engine.train_one_epoch), so the bench measures the code users run.
A mode is a set of `--set` overrides on the experiment config; the work is the same in each:
the config's models, `steps` batches each. Nothing is written to disk.
"""
from __future__ import annotations

import dataclasses
import gc
import json
import os
import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats

from compare import nested
from compare.resolve import components
from compare.config.schema import Config
from compare.assemble.validate import load_config
from compare.engine import calling
from compare.engine.loop import train_one_epoch
from compare.engine.rng import preserved_rng
from compare.errors import CompareWarning, ConfigError, Problem, did_you_mean
from compare.assemble.slots import build_slots, resolve_device
from compare.data.loaders import config_streams, load_data
from compare.bench.peak import Peak, device_peak, precision_dtype
from compare.assemble.preflight import check_data_and_models
from compare.run.shared_pass import SharedPass
from compare.engine.timing import wall_seconds


@dataclass(frozen=True)
class Mode:
    name: str
    what: str  # one line, shown in the table
    overrides: tuple[str, ...] = ()  # applied to the experiment config after the user's --set


MODES: dict[str, Mode] = {
    m.name: m
    for m in (
        Mode("separate", "one standard run per model, each its own DataLoader pass"),
        Mode("shared", "one pass, every model (the runner as users run it)"),
        Mode("cached", "shared, data decoded once into memory", ('data.cache="memory"',)),
        Mode("fused", "shared, same-architecture models fused", ('experiment.fuse="on"',)),
        Mode("bf16", "shared, bf16 autocast + channels_last", ('experiment.precision="bf16-mixed"', "experiment.channels_last=true")),
        Mode("loop", "hand-written shared loop, plain PyTorch"),
        # Not in the default set: CUDA-only gains (on a CPU `streams` is `shared`; compiling takes minutes there).
        Mode("streams", "shared, each model on its own CUDA stream", ('experiment.streams="on"',)),
        Mode("compiled", "shared, torch.compile mode reduce-overhead", ('experiment.compile="reduce-overhead"',)),
    )
}
DEFAULT_MODES = ("separate", "shared", "cached", "fused", "bf16", "loop")
INTERVAL_REPEATS = 5  # the fewest repeats a ratio's bootstrap interval is given for


def parse_modes(text: str) -> list[str]:
    """`separate,shared,...` -> the mode names, in the order given; unknown names are one error."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    problems = [Problem("--modes", name, f"unknown mode{did_you_mean(name, MODES)} (modes: {', '.join(MODES)})") for name in names if name not in MODES]
    if not names:
        problems.append(Problem("--modes", repr(text), f"expected comma-separated modes: {', '.join(MODES)}"))
    if problems:
        raise ConfigError(problems)
    return list(dict.fromkeys(names))


@dataclass
class Measurement:
    """One mode timed once."""

    mode: str
    repeat: int
    seconds: float  # wall time of the timed steps (every model)
    steps: int
    model_samples: int  # samples trained, summed over the models
    losses: dict[str, float]  # each model's training loss at its last step (a determinism witness)
    setup_seconds: float  # models, loader and warmup steps: not part of `seconds`
    data_seconds: float = float("nan")  # of `seconds`, waiting for batches (the runner's modes)
    state_bytes: float = float("nan")  # per model: parameters, gradients and optimizer state
    peak_bytes: float = float("nan")  # per model: the device's peak allocation over the timed steps (CUDA)

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / self.steps

    @property
    def throughput(self) -> float:
        """samples·models per second."""
        return self.model_samples / self.seconds


@dataclass
class BenchResult:
    config: Config
    modes: list[str]
    device: torch.device
    steps: int
    warmup: int
    repeats: int
    train_flops_per_sample: dict[str, float]  # per model: 3 x forward FLOPs (forward + backward)
    peaks: dict[str, Peak]  # per mode
    measurements: list[Measurement] = field(default_factory=list)
    load: list[float] = field(default_factory=list)  # 1-minute load average at the start and the end (POSIX)

    def of(self, mode: str) -> list[Measurement]:
        return [m for m in self.measurements if m.mode == mode]

    def paired_ratios(self, mode: str, baseline: str) -> list[float]:
        """Per repeat, the throughput ratio to `baseline` in the same repeat: the modes of one
        repeat ran back to back, so drift of the machine cancels out."""
        base = {m.repeat: m for m in self.of(baseline)}
        return [m.throughput / base[m.repeat].throughput for m in self.of(mode) if m.repeat in base]

    def ratio(self, mode: str, baseline: str) -> float:
        """The median of the paired ratios."""
        ratios = self.paired_ratios(mode, baseline)
        return statistics.median(ratios) if ratios else float("nan")

    def ratio_interval(self, mode: str, baseline: str) -> tuple[float, float]:
        """A 95% bootstrap interval for that median (percentile method, fixed seed), so a
        reader sees whether a 5% difference is more than the machine's noise; (nan, nan)
        with fewer than INTERVAL_REPEATS repeats, where it would mean nothing."""
        ratios = self.paired_ratios(mode, baseline)
        if len(ratios) < INTERVAL_REPEATS:
            return float("nan"), float("nan")
        found = stats.bootstrap((np.array(ratios),), np.median, method="percentile", n_resamples=4000, rng=np.random.default_rng(0))
        return float(found.confidence_interval.low), float(found.confidence_interval.high)

    def table(self) -> pd.DataFrame:
        """One row per mode: medians over repeats, the spread, ratios, GFLOP/s, MFU."""
        flops = sum(self.train_flops_per_sample.values()) / len(self.train_flops_per_sample)  # per model-sample
        rows = []
        for mode in self.modes:
            runs = self.of(mode)
            per_step = [m.seconds_per_step for m in runs]
            gflops = statistics.median(m.throughput * flops for m in runs) / 1e9
            peak = self.peaks[mode]
            rows.append({
                "mode": mode,
                "what": MODES[mode].what,
                "overrides": " ".join(MODES[mode].overrides),
                "seconds_per_step": statistics.median(per_step),
                "seconds_per_step_min": min(per_step),
                "seconds_per_step_max": max(per_step),
                "samples_models_per_s": statistics.median(m.throughput for m in runs),
                "vs_separate": self.ratio(mode, "separate"),
                "vs_loop": self.ratio(mode, "loop"),
                **{f"vs_{base}_{end}": value for base in ("separate", "loop") for end, value in zip(("low", "high"), self.ratio_interval(mode, base))},
                "gflops_per_s": gflops,
                "peak_gflops_per_s": peak.flops_per_s / 1e9,
                "peak_dtype": peak.dtype,
                "mfu": gflops * 1e9 / peak.flops_per_s,
                "setup_seconds": statistics.median(m.setup_seconds for m in runs),
                "data_seconds_per_step": statistics.median(m.data_seconds / m.steps for m in runs),
                "state_mb_per_model": statistics.median(m.state_bytes for m in runs) / 2**20,
                "peak_mb_per_model": statistics.median(m.peak_bytes for m in runs) / 2**20,
                "seconds_per_step_repeats": " ".join(f"{s:.4g}" for s in per_step),
                "steps": self.steps,
                "warmup": self.warmup,
                "repeats": len(runs),
                "batch_size": self.config.data.batch_size,
                "models": len(self.config.models),
                "device": str(self.device),
            })
        return pd.DataFrame(rows)


class Steps:
    """Stands in for the DataLoader handed to train_one_epoch: the next `count` batches of one
    ongoing pass over `loader` (another pass starts when it runs out), counting the samples."""

    def __init__(self, loader):
        self.loader, self.count, self.samples = loader, 0, 0
        self._batches: Iterator | None = None

    def take(self, count: int) -> "Steps":
        self.count = count
        return self

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        # A generator: iter(loader) and each batch happen inside the caller's next(), so under
        # the data stream that seeded_batches activates around it.
        for _ in range(self.count):
            batch = next(self._batches, None) if self._batches is not None else None
            if batch is None:
                self._batches = iter(self.loader)
                batch = next(self._batches)
            self.samples += nested.batch_size(batch[1])
            yield batch


def state_bytes(slots) -> float:
    """Bytes per model of what training keeps: parameters, gradients, optimizer state."""
    total = 0
    for slot in slots:
        tensors = [*slot.model.parameters(), *(p.grad for p in slot.model.parameters() if p.grad is not None)]
        tensors += [v for state in slot.optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
        total += sum(t.nelement() * t.element_size() for t in tensors)
    return total / max(len(slots), 1)


def runner_pass(mode: str, cfg: Config, data, loss_fn, device: torch.device, warmup: int, steps: int) -> Measurement:
    """The runner's shared pass over `steps` batches, every model of `cfg`."""
    start = time.perf_counter()
    seed = cfg.seeds[0]
    shared = SharedPass(cfg, seed, build_slots(cfg, seed, data, device, fail_fast=True, loss_fn=loss_fn), data, loss_fn, device)
    batches = Steps(shared.train_loader)

    data_seconds = [0.0]

    def train(count: int) -> None:
        data_seconds[0] = train_one_epoch(shared.slots, batches.take(count), loss_fn, shared.data_rng, epoch=1, streams=shared.streams)

    if warmup:
        train(warmup)
    setup = time.perf_counter() - start
    batches.samples = 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = wall_seconds(lambda: train(steps), device)
    peak = torch.cuda.max_memory_allocated(device) / len(shared.slots) if device.type == "cuda" else float("nan")
    for slot in shared.slots:
        if not slot.live:
            warnings.warn(f"bench: model {slot.name} {slot.status} at {slot.where}; the numbers count it as if it had trained", CompareWarning, stacklevel=2)
    losses = {s.name: float(s.last_loss) for s in shared.slots if s.last_loss is not None}
    n = len(shared.slots)
    return Measurement(mode, 0, seconds, steps, batches.samples * n, losses, setup, data_seconds[0], state_bytes(shared.slots), peak)


def separate_runs(cfg: Config, data, loss_fn, device: torch.device, warmup: int, steps: int) -> Measurement:
    """One standard run per model, one after the other: each its own DataLoader and pass."""
    runs = [runner_pass("separate", dataclasses.replace(cfg, models=[model]), data, loss_fn, device, warmup, steps) for model in cfg.models]
    losses = {name: loss for m in runs for name, loss in m.losses.items()}
    total = lambda key: sum(getattr(m, key) for m in runs)  # noqa: E731
    return Measurement("separate", 0, total("seconds"), steps, total("model_samples"), losses, total("setup_seconds"), total("data_seconds"),
                       total("state_bytes") / len(runs), max(m.peak_bytes for m in runs))


def hand_written_loop(cfg: Config, data, loss_fn, device: torch.device, warmup: int, steps: int) -> Measurement:
    """The loop people write (README), over the same DataLoader and the same models, seeded
    as a script would be (`torch.manual_seed` at the top): the overhead baseline for `shared`."""
    start = time.perf_counter()
    seed = cfg.seeds[0]
    slots = build_slots(cfg, seed, data, device)  # the runner's models and optimizers, same init
    models, optimizers = [s.model.train() for s in slots], [s.optimizer for s in slots]
    torch.manual_seed(seed)
    batches = Steps(config_streams(cfg, seed, data, device).train)
    losses: list[torch.Tensor] = []

    def train(count: int) -> None:
        for x, y in batches.take(count):
            x, y = nested.to(x, device), nested.to(y, device)
            losses.clear()
            for slot, model, optimizer in zip(slots, models, optimizers):
                loss = loss_fn(calling.call(model, x, slot.parts.spread), y)  # model(x), or model(**x) for a dict it asks for by key
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.detach())

    if warmup:
        train(warmup)
    setup = time.perf_counter() - start
    batches.samples = 0
    seconds = wall_seconds(lambda: train(steps), device)
    last = {s.name: float(loss) for s, loss in zip(slots, losses)}
    return Measurement("loop", 0, seconds, steps, batches.samples * len(models), last, setup, state_bytes=state_bytes(slots))


def measure(mode: str, cfg: Config, data, loss_fn, device: torch.device, warmup: int, steps: int) -> Measurement:
    if mode == "separate":
        return separate_runs(cfg, data, loss_fn, device, warmup, steps)
    if mode == "loop":
        return hand_written_loop(cfg, data, loss_fn, device, warmup, steps)
    return runner_pass(mode, cfg, data, loss_fn, device, warmup, steps)


def run_bench(
    config: str | Path,
    overrides: Sequence[str] = (),
    modes: Sequence[str] = DEFAULT_MODES,
    steps: int = 20,
    repeats: int = 3,
    warmup: int = 2,
    on_measurement: Callable[[Measurement], None] | None = None,
) -> BenchResult:
    """Time `modes` on the experiment CONFIG (with `overrides`). torch's global random state
    is the same afterwards as before: a run started later in the process is unaffected."""
    problems = [Problem(f"--{key}", str(value), f"expected >= {low}") for key, value, low in (("steps", steps, 1), ("repeats", repeats, 1), ("warmup", warmup, 0)) if value < low]
    if problems:
        raise ConfigError(problems)
    modes = parse_modes(",".join(modes))
    base = load_config(config, list(overrides))
    configs = {m: load_config(config, [*overrides, *MODES[m].overrides]) if MODES[m].overrides else base for m in modes}
    device = resolve_device(base.experiment.device)
    every_gpu = [torch.device("cuda", i) for i in range(torch.cuda.device_count())] if device.type == "cuda" else []  # loop mode seeds them all
    with preserved_rng(every_gpu):
        datasets: dict[str, object] = {}

        def data_of(cfg: Config):
            """Loaded once per distinct [data] table (a mode may change it), outside the timing."""
            key = json.dumps(cfg.to_dict()["data"], sort_keys=True, default=str)
            if key not in datasets:
                datasets[key] = load_data(cfg, device)  # with data.cache: decoded here, untimed
            return datasets[key]

        loss_fn = components.build_loss(base.loss, base.base_dir, data_of(base).num_classes)
        probe = build_slots(base, base.seeds[0], data_of(base), device, fail_fast=True)
        check_data_and_models(base, data_of(base), probe)
        flops = {s.name: 3.0 * f if (f := s.info["flops_per_sample"]) is not None else float("nan") for s in probe}  # not counted: GFLOP/s and MFU n/a
        del probe
        # The hand-written loop is plain fp32 whatever the config asks for.
        dtypes = {m: precision_dtype("32" if m == "loop" else configs[m].experiment.precision, device) for m in modes}
        measured = {dtype: device_peak(device, dtype) for dtype in sorted(set(dtypes.values()))}
        result = BenchResult(base, modes, device, steps, warmup, repeats, flops, {m: measured[dtypes[m]] for m in modes}, load=load_average())
        for repeat in range(repeats):
            for mode in modes:
                cfg = configs[mode]
                m = dataclasses.replace(measure(mode, cfg, data_of(cfg), loss_fn, device, warmup, steps), repeat=repeat)
                gc.collect()  # the mode's loader workers and models go now, not during the next mode
                result.measurements.append(m)
                if on_measurement is not None:
                    on_measurement(m)
        result.load += load_average()
    for row in result.table().itertuples():
        if row.mfu > 1:
            warnings.warn(f"bench: mode {row.mode} ran above the {row.peak_dtype} peak (MFU {100 * row.mfu:.0f}%): it does not compute in {row.peak_dtype} here, or the measured peak is too low", CompareWarning, stacklevel=2)
    return result


def load_average() -> list[float]:
    """The machine's 1-minute load average, where the OS reports one: other processes on the
    cores make timings noisy, and the table says so."""
    try:
        return [os.getloadavg()[0]]
    except (AttributeError, OSError):
        return []
