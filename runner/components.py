"""Losses, optimizers and schedulers by name from torch, plus the name/argument checks the
config runs before anything is built. Models and datasets have registries of their own."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from runner.errors import CompareError, UnknownNameError, did_you_mean

# Schedulers that need Python objects (callables, other schedulers) cannot come from TOML.
_NOT_FROM_TOML = {"LRScheduler", "_LRScheduler", "SequentialLR", "ChainedScheduler", "LambdaLR", "MultiplicativeLR"}


def list_losses() -> list[str]:
    return sorted(n for n in dir(nn) if n.endswith("Loss") and isinstance(getattr(nn, n), type))


def list_optimizers() -> list[str]:
    optim = torch.optim
    return sorted(
        n
        for n in dir(optim)
        if isinstance(getattr(optim, n), type)
        and issubclass(getattr(optim, n), optim.Optimizer)
        and getattr(optim, n) is not optim.Optimizer
    )


def list_schedulers() -> list[str]:
    sched = torch.optim.lr_scheduler
    return sorted(
        n
        for n in dir(sched)
        if isinstance(getattr(sched, n), type)
        and (issubclass(getattr(sched, n), sched.LRScheduler) or n == "ReduceLROnPlateau")
        and n not in _NOT_FROM_TOML
    )


def _lookup(kind: str, name: str, names: list[str], namespace) -> type:
    if name not in names:
        raise UnknownNameError(kind, name, names)
    return getattr(namespace, name)


def create_loss(name: str, args: dict) -> nn.Module:
    return _lookup("loss", name, list_losses(), nn)(**args)


def create_optimizer(name: str, params, args: dict) -> torch.optim.Optimizer:
    return _lookup("optimizer", name, list_optimizers(), torch.optim)(params, **args)


def create_scheduler(name: str, optimizer: torch.optim.Optimizer, args: dict):
    return _lookup("scheduler", name, list_schedulers(), torch.optim.lr_scheduler)(optimizer, **args)


# ---------------------------------------------------------------- checks used by the config


@dataclass(frozen=True)
class Message:
    key: str  # relative key path, e.g. "arch" or "args.width"
    text: str


def check_arguments(fn: Callable, args: dict, skip: tuple[str, ...], prefix: str, required: bool) -> list[Message]:
    """Unknown keyword arguments (and, if `required`, missing ones) against fn's signature."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return []
    names = [n for n, p in params.items() if n not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    out = []
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        out += [Message(f"{prefix}{k}", f"unknown argument{did_you_mean(k, names)} (accepts: {', '.join(names)})") for k in args if k not in names]
    if required:
        missing = [n for n in names if params[n].default is inspect.Parameter.empty and n not in args]
        out += [Message(f"{prefix}{n}", "missing required argument") for n in missing]
    return out


def _checked(kind_key: str, lookup: Callable[[], Any], then: Callable[[Any], list[Message]]) -> list[Message]:
    try:
        obj = lookup()
    except UnknownNameError as err:
        return [Message(kind_key, str(err))]
    return then(obj)


def check_loss(name: str, args: dict) -> list[Message]:
    return _checked("name", lambda: _lookup("loss", name, list_losses(), nn), lambda cls: check_arguments(cls, args, ("self",), "args.", True))


def check_optimizer(name: str, args: dict) -> list[Message]:
    return _checked("name", lambda: _lookup("optimizer", name, list_optimizers(), torch.optim), lambda cls: check_arguments(cls, args, ("self", "params"), "", False))


def check_scheduler(name: str, args: dict) -> list[Message]:
    sched = torch.optim.lr_scheduler
    return _checked("name", lambda: _lookup("scheduler", name, list_schedulers(), sched), lambda cls: check_arguments(cls, args, ("self", "optimizer"), "", True))


def check_model(arch: str, args: dict) -> list[Message]:
    from models import MODELS  # noqa: PLC0415

    return _checked("arch", lambda: MODELS.get(arch), lambda fn: check_arguments(fn, args, ("input_shape", "num_classes"), "args.", False))


def check_dataset(name: str, args: dict) -> list[Message]:
    registry = dataset_package().DATASETS
    return _checked(
        "dataset",
        lambda: registry.get(name),
        lambda cls: check_arguments(cls.__init__, args, ("self", "root", "download", "augment"), "args.", False),
    )


def dataset_package():
    """Our top-level `datasets` package, or a clear error if Hugging Face's shadows it."""
    import datasets  # noqa: PLC0415

    if not hasattr(datasets, "DatasetAdapter"):
        where = getattr(datasets, "__file__", "?")
        raise CompareError(
            f"`import datasets` loaded {where}, which is not compare's datasets package "
            "(Hugging Face's `datasets` has the same import name); run compare from its own "
            "virtual environment or `pip uninstall datasets` there"
        )
    return datasets
