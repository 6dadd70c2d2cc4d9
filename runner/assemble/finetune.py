"""Fine-tuning without code: a [[model]]'s `init`, `freeze` and `param_groups`, and the one line
a builder's pretrained `weights` gets when they cannot be downloaded.

The slot factory (runner/assemble/slots.py) applies them in this order, after the model is built
in its own random stream and before its optimizer is made: `load_init` (the state_dict file),
`freeze` (requires_grad = False by name), `optimizer_params` (what the optimizer gets). None of
them draws a random number, so a model's stream continues exactly as the plain loop's does.

Frozen BatchNorm: a BatchNorm module (any `_BatchNorm`) all of whose parameters `freeze` froze
stays in eval mode while its model trains, so its running statistics do not move (torchvision's
FrozenBatchNorm2d does the same by another class). It is done on the module itself: its `train`
is replaced by one that keeps eval mode, so every place that calls `model.train()` (the loop,
after each evaluation, a fused group's template, the bench, the dry run) keeps it frozen, and the
engine stays free of fine-tuning. A checkpoint holds the module's state, not its mode: a resumed
run rebuilds the model through the same code and freezes it again.
"""
from __future__ import annotations

import contextlib
import fnmatch
import os
import types
import urllib.error
import urllib.parse
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compare.resolve import components
from compare.config.schema import ModelConfig
from compare.errors import CompareNote, ConfigError, Problem, WeightsError, clip, shown
from compare.rundir.integrity import mismatch

SHOWN_NAMES = 5  # parameter or state_dict key names an error lists


def _names(names: list[str]) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > SHOWN_NAMES else ""
    return ", ".join(names[:SHOWN_NAMES]) + more


def _patterns(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value) if isinstance(value, list) else []


# ------------------------------------------------------------ the config check (nothing built)


def check(m: ModelConfig, file: str, where: str, base_dir: Path) -> list[Problem]:
    """What can be told before the model exists: `param_groups` entries and their optimizer
    arguments, and whether the `init` file is there. Patterns are matched when it is built."""
    problems = []
    for i, group in enumerate(m.param_groups):
        key = f"{where}.param_groups[{i}]"
        params = group.get("params")
        if not params or not all(isinstance(p, str) and p for p in _patterns(params)) or not isinstance(params, (str, list)):
            problems.append(Problem(file, f"{key}.params", f"expected a parameter-name glob or a list of them (e.g. \"head.*\"), got {shown(params)}"))
        rest = {k: v for k, v in group.items() if k != "params"}
        if rest and not components.check_optimizer(m.optimizer.name, m.optimizer.args, file, f"{where}.optimizer"):
            problems += components.check_optimizer(m.optimizer.name, m.optimizer.args | rest, file, key)
    if m.init is not None:
        path = base_dir / m.init
        if not path.is_file():
            problems.append(Problem(file, f"{where}.init", f"{shown(m.init)}: {_not_a_file(path)} ({path}; relative to the config's folder)"))
    return problems


def _not_a_file(path: Path) -> str:
    """What `path` is, when it is not a regular file `init` can load."""
    if path.is_dir():
        return "is a directory, not a state_dict file"
    if path.exists():  # /dev/zero, a FIFO, a socket: torch.load would read forever or fail
        return "is not a regular file"
    return "no such file"


# ------------------------------------------------------------ at build time


def load_init(model: nn.Module, m: ModelConfig, base_dir: Path, where: str) -> None:
    """`init`: a state_dict file loaded into the built model (torch.load, weights_only=True);
    with `init_strict = false` only the keys that fit, in name and shape (one note for the rest)."""
    path = base_dir / m.init
    if not path.is_file():  # checked before too; the file may have gone since
        raise WeightsError(f"{where}.init: {path}: {_not_a_file(path)} (relative to the config's folder)")
    damaged = mismatch(path)  # a run's models/<m>/final.pt with its .sha256 beside it: a damaged copy must not spread
    if damaged is not None:
        raise WeightsError(f"{where}.init: {path}: {damaged}: the file is damaged; `compare resume` of the run that wrote it rebuilds it")
    try:
        with warnings.catch_warnings():  # torch's own warnings (a pickle protocol it does not expect) name site-packages; the error below says what matters
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{where}.init: {path}: no such file (relative to the config's folder)") from None
    except Exception as err:  # noqa: BLE001 - not a file torch.load reads with weights_only (pickled code, damaged, not torch)
        raise WeightsError(f"{where}.init: {path}: torch.load(weights_only=True) cannot read it: {type(err).__name__}: {clip(' '.join(str(err).split()), 300)}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        what = f"a dict with keys {_names([str(k) for k in state])}" if isinstance(state, dict) else type(state).__name__
        raise WeightsError(f"{where}.init: {path} holds {what}, not a state_dict (parameter name -> tensor, what torch.save(model.state_dict(), ...) writes)")
    own = model.state_dict()
    reshaped = [k for k, v in state.items() if k in own and v.shape != own[k].shape]
    wrong = [f"{k} {tuple(state[k].shape)} (the model's: {tuple(own[k].shape)})" for k in reshaped]
    if wrong and m.init_strict:
        raise WeightsError(f"{where}.init: {path}: shapes differ: {_names(wrong)} (init_strict = false loads the keys that fit and keeps these as built)")
    missing, unexpected = [k for k in own if k not in state], [k for k in state if k not in own]
    if m.init_strict and (missing or unexpected):
        parts = [f"missing keys {_names(missing)}" if missing else "", f"unexpected keys {_names(unexpected)}" if unexpected else ""]
        raise WeightsError(f"{where}.init: {path} does not fit the model: {'; '.join(p for p in parts if p)} (init_strict = false loads the keys that fit)")
    # init_strict = false: a head of another shape (a 5-class checkpoint into a 10-class model,
    # the fine-tuning case) keeps its built values, as timm's and torchvision's users expect
    fits = {k: v for k, v in state.items() if k in own and k not in reshaped}
    if not fits:  # another model's file: training from scratch behind a note would mislead
        raise WeightsError(f"{where}.init: {path}: none of its {len(state)} keys fits the model ({_names(list(state))}; the model's: {_names(list(own))})")
    model.load_state_dict(fits, strict=False)
    if missing or unexpected or wrong:
        shapes = [f"{k} {tuple(state[k].shape)} vs the model's {tuple(own[k].shape)}" for k in reshaped]
        parts = [f"{len(missing)} missing key(s) keep their built values ({_names(missing)})" if missing else "",
                 f"{len(unexpected)} unexpected key(s) ignored ({_names(unexpected)})" if unexpected else "",
                 f"{len(wrong)} key(s) of another shape keep their built values ({_names(shapes)})" if wrong else ""]
        warnings.warn(f"model {m.name}: init {m.init}: {'; '.join(p for p in parts if p)}; {len(fits)} of the model's {len(own)} keys loaded", CompareNote, stacklevel=3)


def freeze(model: nn.Module, m: ModelConfig, file: str, where: str) -> None:
    """`freeze`: parameters whose names match a glob get requires_grad = False; BatchNorm modules
    all of whose parameters are frozen stay in eval mode (see the module docstring)."""
    if not m.freeze:
        return
    names = [n for n, _ in model.named_parameters()]
    unmatched = [(i, p) for i, p in enumerate(m.freeze) if not fnmatch.filter(names, p)]
    if unmatched:
        raise ConfigError([Problem(file, f"{where}.freeze[{i}]", f"{p!r} matches no parameter (the model's: {_names(names)})") for i, p in unmatched])
    for name, param in model.named_parameters():
        if any(fnmatch.fnmatchcase(name, p) for p in m.freeze):
            param.requires_grad_(False)
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and own and not any(p.requires_grad for p in own):
            module.train = types.MethodType(_stay_in_eval, module)
            module.eval()


def _stay_in_eval(module: nn.Module, mode: bool = True) -> nn.Module:
    """A frozen BatchNorm's `train(mode)`: eval mode whatever the mode, so its statistics stay."""
    return nn.Module.train(module, False)


def optimizer_params(model: nn.Module, m: ModelConfig, file: str, where: str):
    """What the optimizer is built over: `model.parameters()` as the plain loop has it; with
    `freeze`, the parameters that train; with `param_groups`, one group per entry (a parameter
    joins the first whose glob matches it) and the unmatched in a default group with the
    optimizer's own arguments. Frozen parameters join no group."""
    if not m.freeze and not m.param_groups:
        return model.parameters()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    # "name" (Lightning's convention) labels a group's lr in history.csv and TensorBoard; torch keeps it in the group
    groups: list[dict] = [{**{k: v for k, v in g.items() if k != "params"}, "name": group_label(g), "params": []} for g in m.param_groups]
    rest = []
    for name, param in named:
        home = next((i for i, g in enumerate(m.param_groups) if any(fnmatch.fnmatchcase(name, p) for p in _patterns(g["params"]))), None)
        (groups[home]["params"] if home is not None else rest).append(param)
    empty = [i for i, g in enumerate(groups) if not g["params"]]
    if empty:
        hint = f"the model's trainable parameters: {_names([n for n, _ in named])}" if named else "every parameter is frozen"
        raise ConfigError([Problem(file, f"{where}.param_groups[{i}].params", f"{shown(m.param_groups[i]['params'])} matches no trainable parameter (earlier groups take a parameter first; {hint})") for i in empty])
    if not groups and not rest:
        raise ConfigError([Problem(file, f"{where}.freeze", "freezes every parameter: nothing is left to train")])
    return ([{"params": rest}] if rest else []) + groups


def group_label(group: dict) -> str:
    """A `param_groups` entry's name in tables and the plan: its globs (`head.*`, `a.*,b.*`)."""
    return ",".join(_patterns(group.get("params")))


def group_lrs(m: ModelConfig) -> dict[str, Any]:
    """models.csv's `lr[<globs>]` columns: each group's configured lr (else the optimizer's)."""
    return {f"lr[{group_label(g)}]": g.get("lr", m.optimizer.args.get("lr")) for g in m.param_groups}


def groups_text(m: ModelConfig) -> str:
    """The plan's words for the groups: `; head.*: lr=0.5 momentum=0.9` per entry."""
    return "".join(f"; {group_label(g)}: " + " ".join(f"{k}={v}" for k, v in g.items() if k != "params") for g in m.param_groups)


# ------------------------------------------------------------ pretrained weights a builder downloads


@contextlib.contextmanager
def pretrained_download(arch: Any, args: dict, where: str):
    """A builder that downloads pretrained weights (`weights = "DEFAULT"` for torchvision.<name>)
    where no network is reachable: one line naming the file torch looks for, instead of a traceback."""
    try:
        yield
    except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
        reason = getattr(err, "reason", err)
        target = _torchvision_file(arch, args.get("weights"))
        if target is None:
            raise WeightsError(f"{where}.args: building {arch} downloads pretrained weights, and the download failed ({reason})") from None
        raise WeightsError(
            f"{where}.args.weights: {args['weights']!r} needs {target}, which is not there and cannot be downloaded ({reason}); "
            f"download {target.name} elsewhere and put it there (torch.hub.get_dir() is {torch.hub.get_dir()}; TORCH_HOME moves it)"
        ) from None


def _torchvision_file(arch: Any, weights: Any) -> Path | None:
    """Where torch.hub keeps the file of a torchvision builder's weights: <hub dir>/checkpoints/<file name in the URL>."""
    if not isinstance(arch, str) or not arch.startswith("torchvision.") or weights is None:
        return None
    try:
        import torchvision  # noqa: PLC0415 - the builder just imported it

        url = torchvision.models.get_model_weights(arch.removeprefix("torchvision.")).verify(weights).url
    except Exception:  # noqa: BLE001 - a name torchvision does not know: the generic line says enough
        return None
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urllib.parse.urlparse(url).path)
