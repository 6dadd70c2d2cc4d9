"""Keyword arguments from a config, checked against what they are for: unknown and missing
names, value types (the signature's annotations, else the types of its defaults), and what a
cheap constructor itself rejects (its ValueError or TypeError). Each finding is a Problem
naming the file and key, so the config reports them all at once.
"""
from __future__ import annotations

import collections.abc as abc
import functools
import inspect
import sys
import types
import typing
import warnings
from typing import Any, Callable

from compare.errors import ConfigError, Problem, clip, did_you_mean, shown

_SEQUENCES = (list, tuple, abc.Sequence, abc.Iterable, abc.Collection, abc.MutableSequence)
_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "table", type(None): "none"}


def _cached(lookup: Callable) -> Callable:
    """Signatures and hints are read once per callable (a 10,000-point sweep asks 10,000 times)."""
    cached = functools.lru_cache(maxsize=1024)(lookup)

    def read(fn):
        try:
            return cached(fn)
        except TypeError:  # an unhashable callable object
            return lookup(fn)

    return read


@_cached
def parameters(fn: Callable) -> dict[str, inspect.Parameter] | None:
    try:
        return dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None


def check_arguments(fn: Callable, args: dict, skip: tuple[str, ...], file: str, key: str, required: bool) -> list[Problem]:
    """Unknown keyword arguments (and, if `required`, missing ones) against fn's signature, and
    the type of every value whose parameter says what it takes. `key` prefixes each argument."""
    params = parameters(fn)
    if params is None:
        return []
    names = [n for n, p in params.items() if n not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    out = []
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        accepts = f"(accepts: {', '.join(names)})" if names else "(it takes no arguments)"
        out += [Problem(file, f"{key}.{k}", f"unknown argument{did_you_mean(k, names)} {accepts}") for k in args if k not in names]
    if required:
        out += [Problem(file, f"{key}.{n}", "missing required argument") for n in names if params[n].default is inspect.Parameter.empty and n not in args]
    hints = _hints(fn)
    for name, value in args.items():
        if name not in names:
            continue
        expected = hints.get(name, _default_type(params[name].default))
        if expected is not None and not matches(value, expected):
            out.append(Problem(file, f"{key}.{name}", f"expected {describe_type(expected)}, got {shown(value)}"))
    return out


def rejection(what: str, build: Callable[[], Any]) -> str | None:
    """Why `build()` (a constructor given the config's arguments) refuses them, or None. Only
    the errors a constructor raises for bad arguments count; anything else surfaces at build time."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            build()
    except (ValueError, TypeError, ArithmeticError) as err:
        return f"{what} raised {type(err).__name__}: {clip(' '.join(str(err).split()))}"
    except Exception:  # noqa: BLE001 - not about the arguments (a device, a backend): the build says
        return None
    return None


def call_text(name: str, args: dict) -> str:
    """`SGD(lr=-1, momentum=0.9)`: the call as the config writes it, values cut short."""
    return f"{name}({', '.join(f'{k}={shown(v)}' for k, v in args.items())})"


def constructed(file: str, key: str, name: str, args: dict, build: Callable[[], Any]) -> Any:
    """build(), with the ValueError / TypeError a torch (or registry) constructor raises for a bad
    argument turned into the config error it is."""
    try:
        return build()
    except (ValueError, TypeError) as err:
        message = f"{call_text(name, args)} raised {type(err).__name__}: {clip(' '.join(str(err).split()))}"
        raise ConfigError([Problem(file, key, message)]) from err


@_cached
def _hints(fn: Callable) -> dict[str, Any]:
    target = fn.__init__ if isinstance(fn, type) else fn
    try:
        return typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - unresolvable annotations say nothing we can check
        return {}


def _default_type(default: Any) -> type | None:
    """Without an annotation, the default's type says what is expected (numbers stay numbers)."""
    if isinstance(default, bool):
        return bool
    if isinstance(default, (int, float)):
        return float
    if isinstance(default, str):
        return str
    return None


def _tensor_type() -> type | None:
    """torch.Tensor where torch is imported (the config's own tables are checked without it)."""
    torch = sys.modules.get("torch")
    return torch.Tensor if torch is not None else None


def matches(value: Any, hint: Any) -> bool:
    """Whether a config value can be what `hint` asks for. Hints it cannot judge (classes, callables,
    unresolved strings) pass: the constructor itself has the last word."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or isinstance(hint, (str, typing.TypeVar)):
        return True
    if origin is typing.Union or isinstance(hint, types.UnionType):
        return any(matches(value, h) for h in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (float, complex):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in (dict, abc.Mapping) or origin in (dict, abc.Mapping):
        return isinstance(value, dict)
    if hint is _tensor_type():  # a config gives a list of numbers (tensor_args converts it); from Python, a tensor
        return isinstance(value, hint) or (isinstance(value, list) and _numbers(value))
    if hint in _SEQUENCES or origin in _SEQUENCES:
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(matches(v, h) for v, h in zip(value, args))
        return not args or all(matches(v, args[0]) for v in value)
    return True


def _numbers(value: Any) -> bool:
    """A (nested) list of numbers: what TOML can say for a tensor."""
    if isinstance(value, list):
        return bool(value) and all(_numbers(v) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _takes_tensor(hint: Any) -> bool:
    tensor = _tensor_type()
    return tensor is not None and (hint is tensor or any(_takes_tensor(h) for h in typing.get_args(hint)))


def tensor_args(fn: Callable, args: dict) -> dict:
    """`args` with each list of numbers turned into a float tensor where `fn` annotates that
    parameter as a Tensor (`loss.args.weight = [1.0, 19.0]` for a class-weighted loss)."""
    hints = _hints(fn)
    torch = sys.modules.get("torch")
    return {k: torch.tensor(v, dtype=torch.float32) if isinstance(v, list) and _numbers(v) and _takes_tensor(hints.get(k)) else v for k, v in args.items()}


def describe_type(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or isinstance(hint, types.UnionType):
        return " or ".join(dict.fromkeys(describe_type(h) for h in args if h is not type(None)))
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"an array of {len(args)} ({', '.join(describe_type(h) for h in args)})"
    if origin in _SEQUENCES and args:
        return f"an array of {describe_type(args[0])}s"
    if hint in _SEQUENCES or origin in _SEQUENCES:
        return "an array"
    return _NAMES.get(hint, getattr(hint, "__name__", str(hint)))
