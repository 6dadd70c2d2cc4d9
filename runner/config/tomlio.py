"""Write the resolved config back as TOML (tomllib only reads)."""
from __future__ import annotations

import json
import math
import re

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items() if v is not None) + " }" if value else "{}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML: {value!r}")


def dumps(data: dict) -> str:
    """Tables of scalars/inline tables, and arrays of such tables (`[[model]]`). None = omitted."""
    lines: list[str] = []
    for name, table in data.items():
        items = table if isinstance(table, list) else [table]
        header = f"[[{_key(name)}]]" if isinstance(table, list) else f"[{_key(name)}]"
        for item in items:
            lines.append(header)
            lines += [f"{_key(k)} = {_value(v)}" for k, v in item.items() if v is not None]
            lines.append("")
    return "\n".join(lines)
