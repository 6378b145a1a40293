"""What comes out of a sandbox is data, checked: sizes, depth and a schema, or a typed rollout error.

The rollout process writes JSON lines to a pipe: events (`start`, written
before the harness is loaded; `log`, `tool_call`) and one `result`. The harness runs in that process, so every line is
untrusted: the parent reads at most `limits.events_mb` of it, parses each line
with a depth limit, and accepts only the kinds and fields below. A line of any
other kind (a forged `llm_call`, say) or a second result makes the rollout a
`harness_output` error; model calls are recorded by the policy service, never
read from here. Error types that only the parent may give (timeout, crash,
memory limit of the sandbox) are refused from the process, and so is a
`sandbox` failure claimed after the harness started (the child reports one only
before it loads the harness).

Every value is checked as data the store, `sia trace` and the Feedback-Agent
will read: no NaN or infinity (JSON's `NaN` tokens are refused while parsing),
no integer beyond SQLite's 64 bits, no string that UTF-8 cannot encode (a lone
surrogate), no event line over `EVENT_LINE_MAX`, and event times within
`EVENT_TIME_RANGE`. A value that fails makes the rollout a `harness_output`
error; the text of a harness's own exception is kept, with unencodable
characters replaced.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sia import values
from sia.values import clean_text, problem

EVENT_KINDS = ("start", "log", "tool_call")
CHILD_ERRORS = ("harness_syntax", "harness_interface", "harness_exit", "harness_exception", "harness_output", "memory", "policy",
                "policy_request", "sandbox")
EVENT_LINE_MAX = 256 * 1024
"""Bytes of one event line (a log or tool call; the result line is bounded by `output_mb` instead)."""
EVENT_TIME_RANGE = (0.0, 1e11)
"""Event times are Unix seconds: anything outside this range is not a time."""


class OutputError(ValueError):
    """The process wrote something sia does not accept; the message says what."""


@dataclass
class Report:
    events: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None


def loads(text: str | bytes, what: str, check: bool = True) -> Any:
    """`sia.values.loads` (no NaN, no integer beyond 64 bits, no unencodable string, within the depth limit), with
    OutputError naming `what`."""
    try:
        return values.loads(text, check)
    except ValueError as e:
        raise OutputError(f"{what} is {e}" if str(e).startswith(("nested", "not valid")) else f"{what} {e}") from None


def parse(raw: bytes, output_limit: int, truncated: bool) -> Report:
    """The events and result in the process's raw output; OutputError naming the first problem."""
    if truncated:
        raise OutputError("the harness wrote more output than the sandbox's limit (events_mb)")
    report = Report()
    lines = raw.split(b"\n")
    torn = lines[-1] != b""  # a last line without its newline: the process was killed while writing it
    if not torn:
        lines.pop()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = loads(line, f"output line {i}", check=False)
        except OutputError:
            if torn and i == len(lines):
                break
            raise
        # a harness's own error text is kept (cleaned in `_result`); every other value must be fit to store
        checked = {k: v for k, v in rec.items() if k not in ("message", "traceback")} if isinstance(rec, dict) else rec
        bad = problem(checked)
        if bad:
            raise OutputError(f"output line {i} holds {bad}")
        if not isinstance(rec, dict) or not isinstance(rec.get("kind"), str):
            raise OutputError(f"output line {i} is not an object with a 'kind'")
        kind = rec["kind"]
        if kind in EVENT_KINDS:
            t = rec.get("t")
            if not isinstance(rec.get("data"), dict) or isinstance(t, bool) or not isinstance(t, (int, float)):
                raise OutputError(f"output line {i}: a {kind} event needs 't' and a 'data' object")
            if not EVENT_TIME_RANGE[0] <= t <= EVENT_TIME_RANGE[1]:
                raise OutputError(f"output line {i}: event time {str(t)[:40]} is not a time")
            if len(line) > EVENT_LINE_MAX:
                raise OutputError(f"output line {i} is {len(line)} bytes; an event may have {EVENT_LINE_MAX}")
            report.events.append({"kind": kind, "t": float(t), "data": rec["data"]})
        elif kind == "result":
            if report.result is not None:
                raise OutputError("the process wrote more than one result")
            report.result = _result(rec, output_limit)
            if report.result.get("error_type") == "sandbox" and any(e["kind"] == "start" for e in report.events):
                raise OutputError("the result claims a sandbox failure after the harness started, which only sia may give")
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
        return {"status": "error", "error_type": kind, "message": clean_text(rec.get("message", ""), 4000),
                "traceback": clean_text(rec.get("traceback", ""), 4000)}
    raise OutputError(f"the result has status {status!r}")
