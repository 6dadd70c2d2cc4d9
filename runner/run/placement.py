"""THE decision of where a `compare run` trains its models: which process trains which models.

    OneProcess       every model in this process (each on its `[[model]] device`, fused groups
                     together: runner/assemble/slots.py and fusing.py decide within a process)
    DataParallel     under torchrun with `place = "data"`: every model on every rank, the batch
                     split (DDP slots, runner/engine/ddp_slot.py)
    ModelsOverRanks  under torchrun with `place = "models"`: each rank its share of the models
                     over the full batches, rank 0 merges (runner/run/ranks.py)
    ShardJob         `--shard I/N`: this process trains its share into a run directory of its
                     own; `compare merge` glues the shards (runner/run/shards.py, merge.py)

`choose` picks one from `experiment.place` (or `--place`), `--shard`, `--nproc` and whether
torchrun started this process, and refuses the combinations that cannot work, with one line
each. The CLI asks it and calls the chosen placement: a new way to place models is one more
class here and its name in runner/config/schema.py's PLACES.
"""
from __future__ import annotations

from dataclasses import dataclass

from compare.config.schema import Config
from compare.errors import ConfigError, Problem
from compare.run.shards import Shard, refuse_race


@dataclass(frozen=True)
class Placement:
    nproc: int | None = None  # processes torchrun starts on this node (--nproc), if compare starts it
    shard: Shard | None = None  # the share of the models this process trains, if only a share
    place: str = "data"  # what the workers are told (experiment.place)

    def check(self, cfg: Config) -> None:
        """Refusals that need the config (the dry run asks too)."""

    def dry_run_shard(self) -> Shard | None:
        """The share the dry run shows with its assignment table (None: every model here)."""
        return self.shard

    def worker_args(self) -> list[str]:
        """How the workers torchrun starts are told to place the models."""
        return ["--place", self.place]

    def train(self, experiment, run_dir, **options):
        return experiment.run(run_dir, **options)


class OneProcess(Placement):
    pass


class DataParallel(Placement):
    """experiment.run sets up the process group from torchrun's environment (runner/run/distributed.py)."""


class ShardJob(Placement):
    def check(self, cfg: Config) -> None:
        refuse_race(cfg)  # a shard's models never meet the others': --place models races


@dataclass(frozen=True)
class ModelsOverRanks(Placement):
    place: str = "models"

    def dry_run_shard(self) -> Shard | None:
        return Shard(1, self.nproc) if self.nproc is not None else None  # rank r trains shard r+1

    def train(self, experiment, run_dir, **options):
        from compare.run.ranks import run_placed  # noqa: PLC0415 - process groups only where models are placed

        return run_placed(experiment, run_dir, **options)


def choose(place: str, where: tuple[str, str], shard: Shard | None, nproc: int | None, launched: bool, dry_run: bool) -> Placement:
    """The placement for these options. `where`: the file and key `place` came from (`--place`
    on the command line, else the config's experiment.place), named in a refusal."""
    def refuse(file: str, key: str, message: str) -> ConfigError:
        return ConfigError([Problem(file, key, message)])

    if place == "models":
        if shard is not None:
            raise refuse(*where, "models spreads the models over torchrun's ranks; --shard over separate jobs: use one of them")
        if nproc is None and not launched and not dry_run:
            raise refuse(*where, "models spreads the models over torchrun's ranks: add --nproc N (or start it with torchrun)")
        return ModelsOverRanks(nproc)
    if shard is not None:
        if nproc is not None:
            raise refuse("--shard", "--shard", "one process per shard: leave out --nproc")
        return ShardJob(shard=shard)
    return DataParallel(nproc) if nproc is not None or launched else OneProcess()
