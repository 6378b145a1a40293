"""JSON values that come from outside sia (a harness's records, a rollout's requests, a program's answers), checked.

Python's `json` accepts what sia cannot keep: `NaN` and `Infinity` (SQLite
stores them as NULL and the store then refuses the row), integers of any length
(SQLite holds 64 bits; a longer one raises OverflowError), lone surrogates
(`"\\ud800"`: encoding them as UTF-8 raises UnicodeEncodeError in the store,
`sia trace` and the agents' prompts), and nesting deep enough to overflow the
stack. `loads` refuses all of these with one ValueError that says which;
`problem` checks a value already parsed.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64
INT_RANGE = (-(2**63), 2**63 - 1)
"""Integers SQLite stores."""


def depth(value: Any) -> int:
    """Nesting depth of a JSON value, computed without recursion (stops counting past `MAX_DEPTH`)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if d > MAX_DEPTH:
            return d
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return deepest


def problem(value: Any) -> str | None:
    """What makes a parsed JSON value unfit to store or show (a non-finite number, an integer beyond 64 bits, a string
    UTF-8 cannot encode), or None."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return "a string that UTF-8 cannot encode (a lone surrogate)"
        elif isinstance(v, bool) or v is None:
            continue
        elif isinstance(v, int):
            if not INT_RANGE[0] <= v <= INT_RANGE[1]:
                return "an integer beyond 64 bits"
        elif isinstance(v, float):
            if not math.isfinite(v):
                return "a number that is not finite"
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number sia stores")


def loads(text: str | bytes, check: bool = True) -> Any:
    """json.loads without NaN or Infinity, within `MAX_DEPTH` and (`check`) the checks of `problem`; one ValueError
    saying what is wrong otherwise."""
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("nested too deeply to read") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"not valid JSON ({str(e)[:200]})") from None
    if depth(value) > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    bad = problem(value) if check else None
    if bad:
        raise ValueError(f"holds {bad}")
    return value


def clean_text(value: Any, limit: int) -> str:
    """`value` as a string of at most `limit` characters that UTF-8 can encode (lone surrogates become U+FFFD)."""
    return str(value)[:limit].encode("utf-8", "surrogatepass").decode("utf-8", "replace")
