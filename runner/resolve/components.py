"""Losses, optimizers and schedulers by name from torch, plus the name/argument checks the
config runs before anything is built. Models and datasets have registries of their own.

Models, datasets and losses may also be references (`file.py:Attr`, `nb.ipynb:Attr`,
`package.module:attr`, see runner/resolve/references.py) or, from Python, live objects. Each is
resolved in one place (`resolve_model`, `resolve_dataset`, `resolve_loss`) that both the
config check and the builders use.
"""
from __future__ import annotations

import copy
import functools
import inspect
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from compare.resolve import arguments, head_losses, references
from compare.resolve.shared_loss import shared_state
from compare.engine.rng import preserved_rng
from compare.errors import CompareError, CompareWarning, ConfigError, Problem, ReferenceNotFound, UnknownNameError, describe, shown

# The file named when a torch constructor refuses a config's arguments at build time, where the
# Config's source is not at hand; the config check builds the same objects first and names it.
BUILT_FROM = "config"
# Schedulers that need Python objects (callables, other schedulers) cannot come from TOML.
_NOT_FROM_TOML = {"LRScheduler", "_LRScheduler", "SequentialLR", "ChainedScheduler", "LambdaLR", "MultiplicativeLR"}


# torch.nn losses one `loss(logits, targets)` call cannot drive: left out of the list, and named
# with the reason when a config asks for one.
NOT_A_LOGITS_LOSS = {
    "AdaptiveLogSoftmaxWithLoss": "is a model head with parameters, not a loss",
    "CTCLoss": "takes input and target lengths as well (sequence models)",
    "CosineEmbeddingLoss": "takes two inputs and a target",
    "MarginRankingLoss": "takes two inputs and a target",
    "TripletMarginLoss": "takes an anchor, a positive and a negative",
    "TripletMarginWithDistanceLoss": "takes an anchor, a positive and a negative",
    "GaussianNLLLoss": "takes a variance as well",
    "LinearCrossEntropyLoss": "takes hidden states and a weight, not logits",
}


def list_losses() -> list[str]:
    return sorted(n for n in dir(nn) if n.endswith("Loss") and isinstance(getattr(nn, n), type) and n not in NOT_A_LOGITS_LOSS)


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
    if kind == "loss" and name in NOT_A_LOGITS_LOSS:
        raise CompareError(f"loss {name!r} cannot be compare's shared loss(logits, targets): it {NOT_A_LOGITS_LOSS[name]}")
    if name not in names:
        raise UnknownNameError(kind, name, names)
    return getattr(namespace, name)


def create_loss(name: str, args: dict) -> nn.Module:
    cls = _lookup("loss", name, list_losses(), nn)
    return cls(**arguments.tensor_args(cls, args))


def create_optimizer(name: str, params, args: dict) -> torch.optim.Optimizer:
    return _lookup("optimizer", name, list_optimizers(), torch.optim)(params, **args)


def create_scheduler(name: str, optimizer: torch.optim.Optimizer, args: dict):
    return _lookup("scheduler", name, list_schedulers(), torch.optim.lr_scheduler)(optimizer, **args)


# ---------------------------------------------------------------- checks used by the config
# Each takes the file and the key of its table and returns Problems (runner/resolve/arguments.py).


def _checked(file: str, key: str, lookup: Callable[[], Any], then: Callable[[Any], list[Problem]]) -> list[Problem]:
    try:
        obj = lookup()
    except CompareError as err:  # unknown name, missing file or attribute, user code that raised
        return [Problem(file, key, str(err))]
    return then(obj)


def _trial(file: str, key: str, what: str, build: Callable[[], Any], problems: list[Problem]) -> list[Problem]:
    """Where the arguments' types are right, build it once (cheap torch objects only) for the
    ranges and combinations its constructor refuses (lr = -1, nesterov without momentum)."""
    if problems:
        return problems
    reason = arguments.rejection(what, build)
    return [Problem(file, key, reason)] if reason else []


def check_loss(name: Any, args: dict, file: str, key: str, base_dir: str | Path = ".") -> list[Problem]:
    def then(target) -> list[Problem]:
        problems = _loss_arguments(target, args, file, key)
        if registered(name):
            return _trial(file, f"{key}.args", arguments.call_text(name, args), lambda: target(**arguments.tensor_args(target, args)), problems)
        return problems

    return _checked(file, f"{key}.name", lambda: resolve_loss(name, base_dir), then)


def _trial_optimizer(cls: type, args: dict) -> torch.optim.Optimizer:
    return cls([nn.Parameter(torch.zeros(1))], **args)


def check_optimizer(name: str, args: dict, file: str, key: str) -> list[Problem]:
    def then(cls) -> list[Problem]:
        problems = arguments.check_arguments(cls, args, ("self", "params"), file, key, False)
        return _trial(file, key, arguments.call_text(name, args), lambda: _trial_optimizer(cls, args), problems)

    return _checked(file, f"{key}.name", lambda: _lookup("optimizer", name, list_optimizers(), torch.optim), then)


def check_scheduler(name: str, args: dict, optimizer, file: str, key: str) -> list[Problem]:
    """`optimizer` (its config) is what the trial scheduler drives: some need its momentum."""
    sched = torch.optim.lr_scheduler

    def then(cls) -> list[Problem]:
        problems = arguments.check_arguments(cls, args, ("self", "optimizer"), file, key, True)
        if check_optimizer(optimizer.name, optimizer.args, file, key):
            return problems  # reported at the optimizer; nothing to drive a trial scheduler
        trial_optimizer = functools.partial(_trial_optimizer, getattr(torch.optim, optimizer.name), optimizer.args)
        return _trial(file, key, arguments.call_text(name, args), lambda: cls(trial_optimizer(), **args), problems)

    return _checked(file, f"{key}.name", lambda: _lookup("scheduler", name, list_schedulers(), sched), then)


def check_model(arch: Any, args: dict, file: str, key: str, base_dir: str | Path = ".") -> list[Problem]:
    def then(target) -> list[Problem]:
        if isinstance(target, nn.Module):
            return [Problem(file, f"{key}.args", "an nn.Module instance takes no args (it is copied as it is)")] if args else []
        # num_classes / input_shape in args are checked against the dataset when the model is built.
        own = {k: v for k, v in args.items() if k not in DATASET_ARGS or not _takes(target, k, registered(arch))}
        return arguments.check_arguments(target, own, ("self", *DATASET_ARGS), file, f"{key}.args", required=not registered(arch))

    return _checked(file, f"{key}.arch", lambda: resolve_model(arch, base_dir), then)


def check_dataset(name: Any, args: dict, file: str, key: str, base_dir: str | Path = ".") -> list[Problem]:
    def then(target) -> list[Problem]:
        if not isinstance(target, type):
            return [Problem(file, f"{key}.args", "a DatasetAdapter instance takes no args (it is used as it is)")] if args else []
        out = arguments.check_arguments(target.__init__, args, ("self", "root", "download", "augment"), file, f"{key}.args", False)
        params = arguments.parameters(target.__init__)
        if params is not None and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            missing = [n for n in ("root", "download", "augment") if n not in params]
            if missing:
                out.append(Problem(file, f"{key}.dataset", f"{target.__name__}.__init__ must accept root, download and augment (missing: {', '.join(missing)}); take **kwargs and call super().__init__(**kwargs)"))
        return out

    return _checked(file, f"{key}.dataset", lambda: resolve_dataset(name, base_dir), then)


def check_transforms(specs: list | None, file: str, key: str) -> list[Problem]:
    """`[{ name = "RandomCrop", size = 32 }, ...]`: names from torchvision.transforms.v2, arguments
    checked against the class; from Python, transform objects are taken as they are."""
    from compare.datasets.transforms import ADDED_BY_PIPELINE, list_transforms  # noqa: PLC0415
    from torchvision.transforms import v2  # noqa: PLC0415

    out: list[Problem] = []
    for i, spec in enumerate(specs or []):
        where = f"{key}[{i}]"
        if not isinstance(spec, dict):
            if not callable(spec):
                out.append(Problem(file, where, f'expected a table like {{ name = "RandomCrop", size = 32 }}, got {shown(spec)}'))
            continue
        name, args = spec.get("name"), {k: v for k, v in spec.items() if k != "name"}
        if not isinstance(name, str):
            out.append(Problem(file, f"{where}.name", f"expected a torchvision.transforms.v2 class name, got {shown(name)}"))
        elif name in ADDED_BY_PIPELINE:
            out.append(Problem(file, f"{where}.name", f"compare adds {name} itself: every pipeline is ToImage, your steps, ToDtype(float32, scale=True), Normalize(the dataset's stats)"))
        else:
            def then(cls, where=where, name=name, args=args) -> list[Problem]:
                problems = arguments.check_arguments(cls, args, ("self",), file, where, True)
                return _trial(file, where, arguments.call_text(name, args), lambda: cls(**args), problems)

            out += _checked(file, f"{where}.name", lambda: _lookup("transform", name, list_transforms(), v2), then)
    return out


# ---------------------------------------------------------------- resolution (check and build)


def registered(value: Any) -> bool:
    """A plain name from a registry or torch (not a reference, not a live object)."""
    return isinstance(value, str) and not references.is_reference(value)


def resolve_model(arch: Any, base_dir: str | Path = ".") -> Any:
    """A registry builder, or the class / factory / nn.Module instance a reference or live object is."""
    if registered(arch):
        from compare.models import MODELS  # noqa: PLC0415

        return MODELS.get(arch)
    if not isinstance(arch, str) and not callable(arch):
        raise ReferenceNotFound(f"expected a model name (`compare list models`), a reference ({references.FORMS}) or, from Python, an nn.Module class, factory or instance; got {shown(arch)}")
    target = references.resolve(arch, base_dir) if isinstance(arch, str) else arch
    what = describe(arch)
    if isinstance(target, nn.Module):
        return target
    if isinstance(target, type) and not issubclass(target, nn.Module):
        raise ReferenceNotFound(f"{what} is the class {target.__name__}, which is not a torch.nn.Module")
    if not callable(target):
        raise ReferenceNotFound(f"{what} is {shown(target)} ({type(target).__name__}); expected an nn.Module class, a factory returning one, or an nn.Module")
    return target


DATASET_ARGS = ("input_shape", "num_classes")  # given by the dataset, not by the config


def _takes(target: Any, name: str, registry: bool) -> bool:
    """Whether the model builder receives `name` from the dataset: registry builders take both;
    a user's callable where its signature names it, and num_classes where it takes **kwargs."""
    if registry:
        return True
    params = arguments.parameters(target) or {}
    return name in params or (name == "num_classes" and any(p.kind == p.VAR_KEYWORD for p in params.values()))


def dataset_args(args: dict, input_shape, num_classes: int, file: str, key: str) -> dict:
    """`args` without num_classes / input_shape, which may be written only as the dataset's own."""
    given = {"num_classes": num_classes, "input_shape": list(input_shape)}
    wrong = [
        Problem(file, f"{key}.{k}", f"{shown(args[k])}, but the dataset has {num_classes} classes" if k == "num_classes" else f"{shown(args[k])}, but the dataset's samples have shape {list(input_shape)}")
        for k in DATASET_ARGS if k in args and (list(args[k]) if k == "input_shape" and isinstance(args[k], (list, tuple)) else args[k]) != given[k]
    ]
    if wrong:
        raise ConfigError([Problem(p.file, p.key, p.message + " (compare passes the dataset's own; leave it out)") for p in wrong])
    return {k: v for k, v in args.items() if k not in DATASET_ARGS}


def build_model(arch: Any, args: dict, input_shape, num_classes: int, base_dir: str | Path = ".", name: str | None = None) -> nn.Module:
    """Registry builders get input_shape and num_classes; a user's class or factory gets them
    only where its signature names them (`class Net(nn.Module): def __init__(self)` just works)."""
    target = resolve_model(arch, base_dir)
    if registered(arch):
        from compare.models import create_model  # noqa: PLC0415

        return create_model(arch, input_shape, num_classes, **args)
    what = f"model {name} ({describe(arch)})" if name else describe(arch)
    if isinstance(target, nn.Module):
        return copy.deepcopy(target)  # each run (and each model) starts from the instance's weights
    # input_shape where the signature names it; num_classes also to a `**kwargs` factory (timm:create_model).
    shape = {k: v for k, v in (("input_shape", tuple(input_shape)), ("num_classes", num_classes)) if _takes(target, k, False)}
    model = references.call_user(what, target, **shape, **args)
    if not isinstance(model, nn.Module):
        raise references.UserCodeError(f"{what} returned {type(model).__name__}; expected a torch.nn.Module")
    if any(isinstance(p, nn.parameter.UninitializedParameter) for p in model.parameters()):
        # Lazy modules (nn.LazyLinear, ...) get their shapes from a first forward pass, which
        # has to come before the optimizer is built: one sample of zeros, in eval mode.
        model.eval()
        with torch.no_grad():
            references.call_user(f"{what}: its first forward pass (for lazy modules) on one sample of shape {tuple(input_shape)}", model, torch.zeros(1, *input_shape))
        model.train()
    return model


def resolve_dataset(spec: Any, base_dir: str | Path = "."):
    """A DatasetAdapter subclass (registry, reference or live) or a live DatasetAdapter instance."""
    package = dataset_package()
    if registered(spec):
        return package.DATASETS.get(spec)
    if not isinstance(spec, (str, type, package.DatasetAdapter)):
        raise ReferenceNotFound(f"expected a dataset name (`compare list datasets`), a reference ({references.FORMS}) or, from Python, a DatasetAdapter subclass or instance; got {shown(spec)}")
    target = references.resolve(spec, base_dir) if isinstance(spec, str) else spec
    adapter = package.DatasetAdapter
    if isinstance(target, adapter):
        return target
    if not (isinstance(target, type) and issubclass(target, adapter)):
        # the repository's datasets/ folder imported as a top-level `datasets` (from the checkout's root): a second copy
        foreign = isinstance(target, type) and any(c.__name__ == "DatasetAdapter" for c in target.__mro__)
        hint = f"; it subclasses {target.__mro__[1].__module__}'s DatasetAdapter: write `from compare.datasets import DatasetAdapter`" if foreign else ""
        raise ReferenceNotFound(f"{describe(spec)} is {describe(target)}; expected a subclass of compare.datasets.DatasetAdapter that overrides load_data(){hint}")
    if inspect.isabstract(target):
        raise ReferenceNotFound(f"{describe(spec)}: {target.__name__} does not override load_data()")
    return target


def load_dataset(data, base_dir: str | Path = ".", seed: int = 0):
    """Build the `[data]` adapter, give it the configured transforms, and prepare() it."""
    return prepare_dataset(build_adapter(data, base_dir), data, seed)


def build_adapter(data, base_dir: str | Path = "."):
    """The `[data]` adapter, with the configured transforms; nothing loaded yet."""
    target = resolve_dataset(data.dataset, base_dir)
    what = describe(data.dataset)
    if isinstance(target, type):
        build = target if registered(data.dataset) else functools.partial(references.call_user, what, target)
        adapter = build(root=data.root, download=data.download, augment=data.augment, **data.args)
    else:
        adapter = target
    for key in ("train_transforms", "eval_transforms"):
        if getattr(data, key) is not None:
            setattr(adapter, key, build_transforms(getattr(data, key), f"data.{key}"))
    if getattr(data, "collate", None) is not None:  # replaces the adapter's collate_fn (runner/data/collate.py)
        adapter.collate_fn = data.collate if callable(data.collate) else references.resolve(data.collate, base_dir)
    return adapter


def prepare_dataset(adapter, data, seed: int = 0):
    what = describe(data.dataset)
    # Loading reads files and runs the transforms on the first sample: what fails there is the
    # data or the config (a missing file, a crop larger than the image), reported as such.
    prepared = references.call_user(f"loading {what}", adapter.prepare, data.subset, data.test_subset, seed=seed, val_fraction=data.val_fraction)
    # prepare() ran the train pipeline on a sample; the eval pipeline runs it too, here, and not
    # first in the models' probe, where a crop larger than the image was an internal error.
    steps = " (data.eval_transforms)" if data.eval_transforms is not None else ""
    with preserved_rng():  # a random step in eval_transforms draws from the global generators
        if len(prepared.test):
            references.call_user(f"loading {what}: the first test sample{steps}", prepared.test.__getitem__, 0)
    return prepared


def build_transforms(specs: list, key: str = "data.train_transforms") -> list:
    from compare.datasets.transforms import create_transform  # noqa: PLC0415

    out = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict):
            out.append(spec)
            continue
        name, args = spec["name"], {k: v for k, v in spec.items() if k != "name"}
        out.append(arguments.constructed(BUILT_FROM, f"{key}[{i}]", name, args, lambda: create_transform(name, args)))
    return out


def resolve_loss(name: Any, base_dir: str | Path = ".") -> Any:
    """A torch.nn loss class by name; a reference or live object: a class, a callable
    `loss(logits, targets)`, or an instance of either."""
    if registered(name):
        return _lookup("loss", name, list_losses(), nn)
    if not isinstance(name, str) and not callable(name):
        raise ReferenceNotFound(f"expected a torch.nn loss name (`compare list losses`), a reference ({references.FORMS}) or, from Python, a loss class or callable; got {shown(name)}")
    target = references.resolve(name, base_dir) if isinstance(name, str) else name
    if not callable(target):
        raise ReferenceNotFound(f"{describe(name)} is {shown(target)} ({type(target).__name__}); expected a loss class or a callable loss(logits, targets)")
    return target


def _loss_arguments(target, args: dict, file: str, key: str) -> list[Problem]:
    if isinstance(target, type):
        return arguments.check_arguments(target, args, ("self",), file, f"{key}.args", True)
    if inspect.isfunction(target) or inspect.ismethod(target):
        first_two = tuple(list(arguments.parameters(target) or {})[:2])  # (logits, targets)
        return arguments.check_arguments(target, args, first_two, file, f"{key}.args", True)
    return [Problem(file, f"{key}.args", "a loss object takes no args (it is used as it is)")] if args else []


def build_loss(loss, base_dir: str | Path = ".", num_classes: int = 2) -> Callable:
    """ONE loss object for every model. Warns (CompareWarning) when it keeps state between calls."""
    if loss.name == head_losses.NAME:  # a loss per head: the weighted sum, each head's built as this one
        return head_losses.build(loss.args, lambda part: build_loss(part, base_dir, num_classes))
    target = resolve_loss(loss.name, base_dir)
    what = describe(loss.name)
    if isinstance(target, type):
        if registered(loss.name):
            fn = arguments.constructed(BUILT_FROM, "loss.args", loss.name, loss.args, lambda: target(**arguments.tensor_args(target, loss.args)))
        else:
            fn = references.call_user(what, target, **arguments.tensor_args(target, loss.args))
    else:
        fn = functools.partial(target, **loss.args) if loss.args else target
    for problem in shared_state(fn, num_classes):
        warnings.warn(f"loss {what} is one object shared by every model, but {problem}", CompareWarning, stacklevel=2)
    return fn


def dataset_package():
    """compare's dataset package (`compare.datasets`), imported when first needed: it imports
    torchvision. Hugging Face's `datasets` is another package and may be installed beside it."""
    from compare import datasets  # noqa: PLC0415

    return datasets
