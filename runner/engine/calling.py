"""How a model is called with its input: `model(x)`, or `model(**x)` for a dict it asks for by key.

A model gets its input as the dataset gives it: a tensor, a tuple `(image, meta)`, a dict. A
dict is spread as keyword arguments where the model's `forward` asks for its keys by name:

    def forward(self, image, meta)            # {"image": ..., "meta": ...} -> model(**x)
    def forward(self, input_ids, attention_mask=None, **kw)   # a Hugging Face model: model(**x)
    def forward(self, x)                      # the same dict -> model(x): x["image"], x["meta"]

The rule (decided once per model, from one sample, and shown in the dry run): every parameter
of `forward` without a default is a key of the dict, and every key names a parameter of
`forward` that can be passed by keyword (or `forward` takes `**kwargs`). Anything else gets the
dict whole, as one positional argument; so does a pass-through `forward(self, *args, **kwargs)`.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Callable

from torch import nn

NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def spreads(model: nn.Module, x: Any) -> bool:
    """Whether `model` is called as `model(**x)` (see the module's rule)."""
    if not isinstance(x, Mapping) or not x or not all(isinstance(k, str) for k in x):
        return False
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):  # a forward without a signature (a builtin): one argument
        return False
    named = {p.name for p in params if p.kind in NAMED}
    required = {p.name for p in params if p.kind in NAMED and p.default is inspect.Parameter.empty}
    keywords = any(p.kind == p.VAR_KEYWORD for p in params)
    if not named and any(p.kind == p.VAR_POSITIONAL for p in params):  # forward(self, *args, **kwargs): passes on what it is given
        return False
    return required <= set(x) and (set(x) <= named or keywords)


def call(forward: Callable, x: Any, spread: bool) -> Any:
    """`forward(**x)` or `forward(x)`."""
    return forward(**x) if spread else forward(x)


def shown(spread: bool) -> str:
    """How the dry run names the call."""
    return "model(**x)" if spread else "model(x)"
