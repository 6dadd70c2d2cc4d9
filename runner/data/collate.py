"""How a list of dataset items becomes one batch: torch's default_collate, or the run's own
collate function, `[data] collate = "my_collate.py:pad"` or a DatasetAdapter's `collate_fn`
(the config's wins). Padding variable-length sequences is then one function. The failure a user
meets in default_collate (samples of different sizes) is one line that says both fixes."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch.utils.data import default_collate

from compare import nested
from compare.resolve import references
from compare.errors import CollateError, CompareError, MixedSizesError, Problem, UserCodeError, describe

FIX = "images: add a Resize/RandomResizedCrop step to data.train_transforms (and a Resize to data.eval_transforms)"
PAD = 'sequences: pad them in a collate function ([data] collate = "my_collate.py:pad", or the DatasetAdapter\'s collate_fn)'


def collate(items: list):
    """default_collate, module-level so that DataLoader workers can pickle it."""
    try:
        return default_collate(items)
    except RuntimeError as err:
        shapes = set()
        for column in zip(*(nested.tensors(x) for x, *_ in items)):  # each tensor of a structured input (image, mask, ...)
            shapes = {tuple(t.shape) for t in column}
            if len(shapes) > 1:
                break
        if len(shapes) < 2:
            raise
        found = ", ".join("x".join(map(str, s)) for s in sorted(shapes)[:3]) + (", ..." if len(shapes) > 3 else "")
        raise MixedSizesError(f"samples have different sizes ({found} in one batch); {FIX}; {PAD}") from err


class UserCollate:
    """The user's collate function; what it raises is one line naming it (picklable when it is)."""

    def __init__(self, fn: Callable, what: str):
        self.fn, self.what = fn, what

    def __call__(self, items: list):
        try:
            return references.call_user(f"the collate function {self.what}", self.fn, items)
        except UserCodeError as err:  # a typed error whose one line survives a DataLoader worker
            raise CollateError(str(err)) from err.__cause__


def collate_for(data) -> Callable:
    """The collate of `data`'s batch streams: its own collate_fn, else `collate` above."""
    fn = getattr(data, "collate_fn", None)
    return collate if fn is None else UserCollate(fn, describe(fn) if not hasattr(fn, "__self__") else f"{type(fn.__self__).__name__}.collate_fn")


def check_collate(d, file: str, key: str, base_dir: str | Path = ".") -> list[Problem]:
    """`[data] collate`: a reference to a function (from Python: the function); not with the cache."""
    spec = d.collate
    if spec is None or callable(spec):
        fn = spec
    elif not references.is_reference(spec):
        return [Problem(file, key, f"expected a reference to a function, like my_collate.py:pad ({references.FORMS}), got {spec!r}")]
    else:
        try:
            fn = references.resolve(spec, base_dir)
        except CompareError as err:  # a missing file or attribute, or the file raised: its own line
            return [Problem(file, key, str(err))]
    if fn is not None and not callable(fn):
        return [Problem(file, key, f"{spec} is a {type(fn).__name__}, not a function of a list of items")]
    if fn is not None and d.cache != "none":
        return [Problem(file, key, f'the decoded cache (data.cache = "{d.cache}") stacks same-size samples and runs no collate function; set data.cache = "none"')]
    return []
