"""Typed errors. The library raises these; only the CLI turns them into exit codes."""
from __future__ import annotations

import difflib
import signal
import types
from dataclasses import dataclass
from typing import Any, Iterable

# Exit codes (documented in README).
EXIT_OK = 0  # every model trained
EXIT_INTERNAL = 1  # a bug: rerun with --debug
EXIT_BAD_INPUT = 2  # bad config, data or run directory
EXIT_SOME_FAILED = 3  # finished, but some models failed or diverged
EXIT_INTERRUPTED = 130  # SIGINT (SIGTERM: 143); a checkpoint was written


SHOWN_CHARS = 200  # an echoed value is cut to about this many characters
LINE_CHARS = 1000  # and no error line is longer than this


def clip(text: str, limit: int = SHOWN_CHARS) -> str:
    """`text`, cut to at most `limit` characters, saying how long it was."""
    if len(text) <= limit:
        return text
    tail = f"... ({len(text):,} characters)"
    return text[: limit - len(tail)] + tail


def describe(obj: Any) -> str:
    """A name for anything a config may hold; live Python objects as `<python:module.QualName>`."""
    if isinstance(obj, str):
        return obj
    if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
        return f"<python:{obj.__module__}.{obj.__qualname__}>"
    cls = type(obj)
    return f"<python:{cls.__module__}.{cls.__qualname__} instance>"


def shown(value) -> str:
    """repr(value) for an error line: a value echoed back, never a whole file of it."""
    return clip(repr(value))


def close_matches(name, choices: Iterable, n: int = 3) -> list[str]:
    """Close matches among the string choices (a config may hold names of any type); a name
    that only lacks its namespace (resnet50 for torchvision.resnet50) first."""
    lowered = {c.lower(): c for c in choices if isinstance(c, str)}
    key = str(name).lower()
    namespaced = [c for low, c in lowered.items() if low.rpartition(".")[2] == key and low != key]
    hits = difflib.get_close_matches(key, lowered, n=n, cutoff=0.6)
    return list(dict.fromkeys(namespaced + [lowered[h] for h in hits]))[:n]


def did_you_mean(name, choices: Iterable) -> str:
    hits = close_matches(name, choices)
    return f"; did you mean {' or '.join(shown(h) for h in hits)}?" if hits else ""


class CompareError(Exception):
    """Base of every error the user can fix; carries the CLI exit code."""

    exit_code = EXIT_BAD_INPUT
    # Under torchrun every rank raises the same error and rank 0 alone prints it; an error only
    # this rank knows (e.g. its own backward failed) is printed by this rank.
    rank_local = False


@dataclass(frozen=True)
class Problem:
    file: str  # config file the key came from ("--set" for overrides)
    key: str  # dotted key path, e.g. "model[1].optimizer.lr"
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {clip(self.key)}: {self.message}"


class ConfigError(CompareError):
    """Every problem found in a config, reported together."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class UnknownNameError(CompareError):
    """A registry lookup failed; lists close matches."""

    def __init__(self, kind: str, name: str, choices: Iterable[str]):
        self.kind, self.name = kind, name
        super().__init__(f"unknown {kind} {shown(name)}{did_you_mean(name, choices)} (see `compare list {kind}s`)")


class DataError(CompareError):
    """A dataset could not be found or read; names the path."""


class RunDirError(CompareError):
    """The run directory cannot be used as asked."""


class DeviceError(CompareError):
    """A device (experiment.device, model.<name>.device, --nproc) that this machine does not have."""


class ModelFailedError(CompareError):
    """With --fail-fast (or a DDP backward failure): the first model that failed stops the whole run."""

    exit_code = EXIT_SOME_FAILED

    def __init__(self, message: str, rank_local: bool = False):
        super().__init__(message)
        self.rank_local = rank_local


class PeerError(CompareError):
    """Rank 0 hit an error in a step only it performs (run directory, checkpoint); the other
    ranks stop with the same exit code instead of waiting for it forever."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class StopNow(BaseException):
    """A signal that stops at once: the second SIGINT/SIGTERM, or one where there is nothing to
    checkpoint. Raised by compare's signal handler, so it is never mistaken for an exception of a
    model's code; not an Exception, so no `except Exception` (user code, a report, the CLI
    framework) swallows it. runner/cli/main.py prints it and exits 128 + the signal."""

    def __init__(self, signum: int = signal.SIGINT, where: str = "stopped at once (checkpoints already written are kept)"):
        self.exit_code = 128 + signum  # 130 for SIGINT, 143 for SIGTERM
        super().__init__(f"interrupted by {signal.Signals(signum).name}; {where}")


class WeightsError(CompareError):
    """Weights a model starts from (`init`, a builder's pretrained `weights`) that cannot be
    found, read or loaded into it; names the file and the first keys that do not fit."""


class ReferenceNotFound(CompareError):
    """A reference (`file.py:Attr`, `nb.ipynb:Attr`, `package.module:attr`) names a file,
    module or attribute that does not exist, or an object of the wrong kind."""


class UserCodeError(CompareError):
    """The user's own code (a referenced file or notebook, a model class or factory, a
    dataset adapter) raised; the message names the file and line."""


class CompareWarning(UserWarning):
    """Something the user should know that does not stop the run (the CLI prints one line)."""


class CompareNote(CompareWarning):
    """Something compare did on the user's behalf, worth one `note:` line (not a problem)."""


class ReportError(CompareError):
    """A report was asked for something the run does not hold (unknown column or metric)."""


class MixedSizesError(DataError):
    """The images of one batch have different sizes (no resize step in the transforms). Raised
    in a DataLoader worker too: torch re-raises it in the main process as
    `MixedSizesError(message=<the worker's traceback>)`, whose last line is this error's own."""

    message = "images have different sizes"  # truthy: torch's worker re-raise passes message=

    def __init__(self, message: str = message):
        lines = [line for line in str(message).splitlines() if line.strip()]
        last = lines[-1] if lines else self.message
        super().__init__(last.split(f"{type(self).__name__}: ", 1)[-1])


class CollateError(UserCodeError):
    """The run's collate function (`[data] collate`, a DatasetAdapter's collate_fn) raised; as
    MixedSizesError, torch re-raises it from a DataLoader worker with the worker's traceback."""

    message = "the collate function raised"

    def __init__(self, message: str = message):  # the last line of a worker's traceback is this error's own
        lines = [line for line in str(message).splitlines() if line.strip()]
        super().__init__((lines[-1] if lines else self.message).split(f"{type(self).__name__}: ", 1)[-1])


def one_line(err: BaseException) -> str:
    """An exception's message on one line: what the CLI prints and notes quote."""
    return " ".join(str(err).split()) or "(no message)"
