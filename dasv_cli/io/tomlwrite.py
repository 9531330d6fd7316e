"""Write a flat table of options as TOML (Python's tomllib only reads it; no dependency for this).

Only what dasv's configs hold: strings (escaped as TOML basic strings), booleans, integers and
floats (inf and nan included); None means "not set" and is left out, as a TOML file has no null.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Mapping

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_string(text: str) -> str:
    """`text` as a TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    """One value as TOML (bool before int: a bool is an int in Python)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # always has '.', 'e' or both: reads back as a float, the same float
    if isinstance(value, str):
        return toml_string(value)
    raise TypeError(f"no TOML form for {type(value).__name__} values")


def toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else toml_string(key)


def dumps(items: Mapping[str, Any], comments: Iterable[str] = ()) -> str:
    """`# comment` lines, then one `key = value` line per item that is not None."""
    lines = [f"# {c}" if c else "#" for c in comments]
    lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in items.items() if v is not None]
    return "\n".join(lines) + "\n"


__all__ = ["dumps", "toml_string", "toml_value", "toml_key"]
