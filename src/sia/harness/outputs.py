"""What comes out of a sandbox is data, checked: sizes, depth and a schema, or a typed rollout error.

The rollout process writes JSON lines to a pipe: events (`start`, written
before the harness is loaded; `log`, `tool_call`) and one `result`. The harness runs in that process, so every line is
untrusted: the parent reads at most `limits.events_mb` of it, parses each line
with a depth limit, and accepts only the kinds and fields below. A line of any
other kind (a forged `llm_call`, say) or a second result makes the rollout a
`harness_output` error; model calls are recorded by the policy service, never
read from here. Error types that only the parent may give (timeout, crash,
memory limit of the sandbox) are refused from the process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

EVENT_KINDS = ("start", "log", "tool_call")
CHILD_ERRORS = ("harness_syntax", "harness_interface", "harness_exit", "harness_exception", "harness_output", "memory", "policy",
                "policy_request", "sandbox")
MAX_DEPTH = 64


class OutputError(ValueError):
    """The process wrote something sia does not accept; the message says what."""


@dataclass
class Report:
    events: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None


def depth(value: Any) -> int:
    """Nesting depth of a JSON value, computed without recursion."""
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


def loads(text: str | bytes, what: str) -> Any:
    """json.loads with the depth limit; OutputError instead of RecursionError or a parse error."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise OutputError(f"{what} is nested too deeply to read") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise OutputError(f"{what} is not valid JSON ({e})") from None
    if depth(value) > MAX_DEPTH:
        raise OutputError(f"{what} is nested deeper than {MAX_DEPTH} levels")
    return value


def parse(raw: bytes, output_limit: int, truncated: bool) -> Report:
    """The events and result in the process's raw output; OutputError naming the first problem."""
    if truncated:
        raise OutputError("the harness wrote more output than the sandbox's limit (events_mb)")
    report = Report()
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = loads(line, f"output line {i}")
        except OutputError:
            if i == len(lines):
                break  # a torn last line from a killed process
            raise
        if not isinstance(rec, dict) or not isinstance(rec.get("kind"), str):
            raise OutputError(f"output line {i} is not an object with a 'kind'")
        kind = rec["kind"]
        if kind in EVENT_KINDS:
            if not isinstance(rec.get("data"), dict) or not isinstance(rec.get("t"), (int, float)):
                raise OutputError(f"output line {i}: a {kind} event needs 't' and a 'data' object")
            report.events.append({"kind": kind, "t": float(rec["t"]), "data": rec["data"]})
        elif kind == "result":
            if report.result is not None:
                raise OutputError("the process wrote more than one result")
            report.result = _result(rec, output_limit)
        else:
            raise OutputError(f"output line {i} has kind {kind!r}, which a harness may not write (only {', '.join(EVENT_KINDS)})")
    return report


def _result(rec: dict[str, Any], output_limit: int) -> dict[str, Any]:
    status = rec.get("status")
    if status == "ok":
        if "output" not in rec:
            raise OutputError("the result has no output")
        size = len(json.dumps(rec["output"]))
        if size > output_limit:
            raise OutputError(f"the output is {size} bytes; the limit is {output_limit} (output_mb)")
        return {"status": "ok", "output": rec["output"]}
    if status == "error":
        kind = rec.get("error_type")
        if kind not in CHILD_ERRORS:
            raise OutputError(f"the result claims error type {kind!r}, which only sia may give")
        return {"status": "error", "error_type": kind, "message": str(rec.get("message", ""))[:4000],
                "traceback": str(rec.get("traceback", ""))[:4000]}
    raise OutputError(f"the result has status {status!r}")
