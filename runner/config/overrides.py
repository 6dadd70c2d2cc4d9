"""`--set dotted.key=value` overrides on the raw config (before validation).

`model.<name>.key=value` addresses one model; names may hold dots and brackets (sweep points:
`model.tudui[lr=0.1].seed=3`). Live Python objects in the config are shared, not copied.
"""
from __future__ import annotations

import re
import tomllib
from typing import Any

from compare.errors import Problem, did_you_mean, shown


def plain_copy(value: Any) -> Any:
    """Copy TOML-shaped data (tables, arrays); anything else (live Python objects) is shared."""
    if isinstance(value, dict):
        return {k: plain_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_copy(v) for v in value]
    return value


def parse_override_value(text: str) -> Any:
    """TOML value syntax (`0.1`, `true`, `[1, 2]`, `"s"`); anything else is a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):  # too deeply nested: a string, refused by the key's type check
        return text


def split_override(item: str) -> tuple[str, str, str]:
    """`key=value` at the first `=` outside brackets: `model.m[lr=0.1].seed=3` works."""
    depth = 0
    for i, char in enumerate(item):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "=" and depth <= 0:
            return item[:i], "=", item[i + 1 :]
    return item, "", ""


def apply_overrides(raw: dict, overrides, source: str, problems: list[Problem], defer_unknown_models: bool = False) -> tuple[dict, set[str], list[str]]:
    """Apply `dotted.key=value`; `model.<name>.key=value` addresses one model. Returns the new
    config, the keys set, and (with `defer_unknown_models`) the overrides naming no model yet."""
    raw = plain_copy(raw)
    overridden: set[str] = set()
    deferred: list[str] = []
    for item in overrides:
        key, sep, text = split_override(item)
        key = key.strip()
        if not sep or not key:
            problems.append(Problem("--set", item, "expected dotted.key=value"))
            continue
        parts = key.split(".")
        target = raw
        if parts[0] == "model":
            models = raw.get("model", [])
            names = [m.get("name") for m in models if isinstance(m, dict)]
            rest = key[len("model.") :]
            # Model names may contain dots (sweeps): take the longest name that prefixes the key.
            hits = [n for n in names if isinstance(n, str) and rest.startswith(n + ".")]
            if not hits and defer_unknown_models:
                deferred.append(item)
                continue
            if not hits and rest in names:  # `model.a=3`: the whole table, which --set does not replace
                problems.append(Problem("--set", key, f"is the [[model]] table {shown(rest)}; set one of its keys, e.g. model.{rest}.optimizer.lr=0.1"))
                continue
            if not hits:
                guess = re.match(r"(?:\[[^\]]*\]|[^.])*", rest).group(0)  # up to the first dot outside [...]
                problems.append(Problem("--set", key, f"no model named {shown(guess)}{did_you_mean(guess, [n for n in names if n != guess])}"))
                continue
            name = max(hits, key=len)
            target = models[names.index(name)]
            parts = rest[len(name) + 1 :].split(".")
            prefix = f"model.{name}."
        else:
            prefix = ""
        for i, part in enumerate(parts[:-1]):
            child = target.setdefault(part, {})
            if not isinstance(child, dict):
                problems.append(Problem("--set", key, f"{'.'.join(parts[: i + 1])} is not a table"))
                break
            target = child
        else:
            target[parts[-1]] = value = parse_override_value(text.strip())
            overridden.add(prefix + ".".join(parts))
            if prefix and parts == ["name"] and isinstance(value, str):
                overridden.add(f"model.{value}.name")  # its problems (a duplicate) are reported at the new name
    return raw, overridden, deferred
