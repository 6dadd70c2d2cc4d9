"""THE one home for cutting a comparison into shards: which models each shard trains.

    compare run CFG --shard 2/4        # the 2nd of 4 shares of the models, its own run directory
    compare run CFG --shard auto       # the share from SLURM_ARRAY_TASK_ID (or JOB_COMPLETION_INDEX)
    compare merge DIR1 DIR2 ... --out RUN     # runner/run/merge.py: one run, bitwise as unsharded

Every model has its own random stream and sees the same batches whichever models share its pass
(DESIGN.md, RNG isolation), so a comparison can be cut anywhere and glued back bitwise. The
assignment is a pure function of the config (and the data's shape, which every shard loads
alike): each model's estimated cost is forward FLOPs per sample x train samples x epochs (where
FLOPs cannot be counted, 2 x its parameters per sample, a dense layer's forward cost), models
that could fuse (same arch, args and device; runner/assemble/fusing.py) stay together as one
unit, and the units are placed greedily, the most expensive first, each on the least loaded
shard (ties: config order, then the lower shard). Every shard computes the same assignment;
the shard's `shard.json` (and `env.json`) records it, and a resume reads it back from there.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

from compare.config.schema import Config
from compare.errors import ConfigError, Problem, RunDirError
from compare.rundir.layout import SHARD as SHARD_FILE  # written with config.toml when a shard claims its run directory
from compare.rundir.layout import CONFIG, SHARDS, shard_folder

RACE_REFUSED = (
    "racing compares the models with each other at every look, so a shard cannot race alone: "
    "use --nproc N --place models (the ranks meet at each look), leave out --shard, or remove [experiment.race]"
)


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int
    models: tuple[str, ...] | None = None  # this shard's models, config order (None: not assigned yet)
    assignment: tuple[tuple[str, ...], ...] | None = None  # every shard's models

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def suffix(self) -> str:
        """The default run directory's suffix: runs/cifar.shard-2-of-4."""
        return f".shard-{self.index}-of-{self.count}"

    def record(self, config_hash: str) -> dict:
        return {"index": self.index, "count": self.count, "models": list(self.models or ()),
                "assignment": [list(a) for a in self.assignment or ()], "config_sha256": config_hash}


def _bad(variable: str, message: str) -> ConfigError:
    return ConfigError([Problem("--shard", variable, message)])


def _integer(variable: str, value: str | None) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise _bad(variable, f"expected an integer, got {value!r}") from None


def parse_shard(text: str, env: Mapping[str, str] | None = None) -> Shard:
    """`I/N` (1-based), `auto` or `auto/N`. `auto` reads a Slurm array task (SLURM_ARRAY_TASK_ID,
    counted from SLURM_ARRAY_TASK_MIN, 0 where unset; SLURM_ARRAY_TASK_COUNT) or a Kubernetes
    Indexed Job (JOB_COMPLETION_INDEX, 0-based; its count must be given: `auto/N`)."""
    env = os.environ if env is None else env
    head, _, tail = text.strip().partition("/")
    given = _integer("--shard", tail) if tail else None
    if given is not None and given < 1:
        raise _bad("--shard", f"expected a shard count >= 1, got {text!r}")
    if head != "auto":
        if given is None:
            raise _bad("--shard", f"expected I/N (1 <= I <= N, e.g. 1/4), auto or auto/N, got {text!r}")
        index = _integer("--shard", head)
        if not 1 <= index <= given:
            raise _bad("--shard", f"expected I/N with 1 <= I <= N (shards count from 1), got {text!r}")
        return Shard(index, given)
    if "SLURM_ARRAY_TASK_ID" in env:
        task = _integer("SLURM_ARRAY_TASK_ID", env["SLURM_ARRAY_TASK_ID"])
        first = _integer("SLURM_ARRAY_TASK_MIN", env["SLURM_ARRAY_TASK_MIN"]) if "SLURM_ARRAY_TASK_MIN" in env else 0
        step = env.get("SLURM_ARRAY_TASK_STEP", "1")
        if step.strip() != "1":
            raise _bad("SLURM_ARRAY_TASK_STEP", f"is {step!r}: shards need a contiguous array (--array=0-{(given or 4) - 1}), not a stepped one")
        if "SLURM_ARRAY_TASK_COUNT" in env:
            count = _integer("SLURM_ARRAY_TASK_COUNT", env["SLURM_ARRAY_TASK_COUNT"])
            if given is not None and given != count:
                raise _bad("SLURM_ARRAY_TASK_COUNT", f"is {count}, but --shard {text} says {given} shards")
        elif given is not None:
            count = given
        else:
            raise _bad("SLURM_ARRAY_TASK_COUNT", "is not set: give the count, --shard auto/N")
        index = task - first + 1
        if not 1 <= index <= count:
            raise _bad("SLURM_ARRAY_TASK_ID", f"is {task}, outside the array of {count} task(s) from SLURM_ARRAY_TASK_MIN={first}")
        return Shard(index, count)
    if "JOB_COMPLETION_INDEX" in env:
        task = _integer("JOB_COMPLETION_INDEX", env["JOB_COMPLETION_INDEX"])
        if given is None:
            raise _bad("JOB_COMPLETION_INDEX", f"is {task}, but a Kubernetes Indexed Job does not tell the count: use --shard auto/N (N = the Job's completions)")
        if not 0 <= task < given:
            raise _bad("JOB_COMPLETION_INDEX", f"is {task}, outside 0..{given - 1} for --shard {text}")
        return Shard(task + 1, given)
    raise _bad("--shard", "auto: neither SLURM_ARRAY_TASK_ID (a Slurm array) nor JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) is set; give --shard I/N")


def refuse_race(cfg: Config) -> None:
    """A --shard job cannot race (its models never meet the others'): one line, exit 2."""
    if cfg.experiment.race is not None:
        raise ConfigError([Problem(cfg.source, "experiment.race", RACE_REFUSED)])


def units(cfg: Config) -> list[tuple[str, ...]]:
    """The config's models in placement units, in config order: with `experiment.fuse` on or
    auto, models that could fuse (same arch, args, device) form one unit and stay together."""
    from compare.errors import describe  # noqa: PLC0415

    if cfg.experiment.fuse == "off":
        return [(m.name,) for m in cfg.models]
    keyed: dict[tuple, list[str]] = {}
    for m in cfg.models:
        key = (describe(m.arch), json.dumps(m.args, sort_keys=True, default=repr), m.device) if m.device is None else (m.name,)
        keyed.setdefault(key, []).append(m.name)
    return [tuple(g) for g in keyed.values()]


def model_cost(flops_per_sample, params: int, samples: int) -> float:
    """Forward FLOPs per sample x samples; 2 x parameters per sample where FLOPs are unknown."""
    per_sample = flops_per_sample if isinstance(flops_per_sample, (int, float)) and flops_per_sample == flops_per_sample and flops_per_sample > 0 else 2 * params
    return float(per_sample) * samples


def assign(groups: list[tuple[str, ...]], costs: Mapping[str, float], count: int, order: list[str]) -> tuple[tuple[str, ...], ...]:
    """Greedy balance (longest processing time first): each unit, the costliest first, goes to
    the least loaded shard. Returns every shard's models in config `order`."""
    if count > len(groups):
        raise ConfigError([Problem("--shard", "--shard", f"{count} shards for {len(groups)} model(s) or fused group(s): a shard would train nothing; use at most {len(groups)}")])
    position = {name: i for i, name in enumerate(order)}
    loads, members = [0.0] * count, [[] for _ in range(count)]
    ranked = sorted(range(len(groups)), key=lambda g: (-sum(costs[n] for n in groups[g]), g))
    for g in ranked:
        target = min(range(count), key=lambda s: (loads[s], s))
        loads[target] += sum(costs[n] for n in groups[g])
        members[target] += groups[g]
    return tuple(tuple(sorted(m, key=position.__getitem__)) for m in members)


def probe_costs(cfg: Config, data) -> dict[str, dict]:
    """Each model built on the CPU, in its own stream, with every global generator left as it
    was, and its probe read: {name: {flops_per_sample, params, cost}}; then discarded."""
    import torch  # noqa: PLC0415

    from compare.assemble.flops import probe_batch  # noqa: PLC0415
    from compare.assemble.slots import build_slot  # noqa: PLC0415
    from compare.engine.rng import preserved_rng  # noqa: PLC0415

    samples = len(data.train) * cfg.experiment.epochs
    sample = probe_batch(data)
    out = {}
    for m in cfg.models:
        with preserved_rng(), warnings.catch_warnings():  # the run itself builds (and warns about) each model
            warnings.simplefilter("ignore")
            info = build_slot(cfg, m, cfg.seeds[0], data.input_shape, data.num_classes, torch.device("cpu"), sample=sample).info
        out[m.name] = {"flops_per_sample": info["flops_per_sample"], "params": int(info["params"]), "cost": model_cost(info["flops_per_sample"], info["params"], samples)}
    return out


def plan(cfg: Config, costs: Mapping[str, float], shard: Shard) -> Shard:
    """`shard` with its models and the whole assignment."""
    assignment = assign(units(cfg), costs, shard.count, [m.name for m in cfg.models])
    return replace(shard, models=assignment[shard.index - 1], assignment=assignment)


def shard_config(cfg: Config, names) -> Config:
    """The config a shard trains: the same, with only its models."""
    keep = set(names)
    return replace(cfg, models=[m for m in cfg.models if m.name in keep])


def config_hash(cfg: Config) -> str:
    import hashlib  # noqa: PLC0415

    from compare.config import tomlio  # noqa: PLC0415

    return hashlib.sha256(tomlio.dumps(cfg.to_dict()).encode()).hexdigest()


def read_shard(run_dir: Path) -> Shard | None:
    """The shard a run directory holds (None: not a shard's)."""
    path = Path(run_dir) / SHARD_FILE
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text())
        models = tuple(raw["models"]) or None
        assignment = tuple(tuple(a) for a in raw.get("assignment") or ()) or None
        return Shard(int(raw["index"]), int(raw["count"]), models, assignment)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RunDirError(f"{path} is unreadable ({type(err).__name__}); it is not compare's shard record") from None


def placed_shards(run_dir: Path) -> list[Path]:
    """The rank folders RUN/.shards/shard-<i>-of-<n>/ (i = 1..n) of a --place models run stopped
    before rank 0 merged them into RUN, the first that holds a config.toml first (a rank stopped
    before it wrote one, or before its folder, starts over on resume); [] for any other folder."""
    names = {p.name for p in (Path(run_dir) / SHARDS).glob("shard-*-of-*") if p.is_dir()}
    counts = {name.rsplit("-", 1)[1] for name in names}
    count = int(counts.pop()) if len(counts) == 1 and next(iter(counts)).isdigit() else 0
    folders = [shard_folder(run_dir, i, count) for i in range(1, count + 1)]
    started = [f for f in folders if (f / CONFIG).is_file() and read_shard(f) is not None]
    if not started or not names <= {f.name for f in folders}:
        return []  # not one set of ranks: nothing a resume of RUN could restart
    return started[:1] + [f for f in folders if f != started[0]]


def assignment_table(shard: Shard, costs: Mapping[str, dict] | None = None) -> list[str]:
    """The dry run's lines: which models this shard trains, and every shard's share."""
    total = {i: sum((costs or {}).get(n, {}).get("cost", 0.0) for n in names) for i, names in enumerate(shard.assignment or (), start=1)}
    lines = [f"shard {shard.label}: trains {', '.join(shard.models or ())}"]
    for i, names in enumerate(shard.assignment or (), start=1):
        cost = f" (est. {total[i]:.3g} FLOPs)" if costs else ""
        lines.append(f"  {'*' if i == shard.index else ' '} shard {i}/{shard.count}: {', '.join(names)}{cost}")
    return lines
