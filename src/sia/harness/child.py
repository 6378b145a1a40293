"""The process a rollout runs in: loads the harness, calls `solve(example, ctx)`, writes the result.

Started by `sia.harness.sandbox` with resource limits, a scrubbed environment and a
scratch working directory. It talks to the parent only through files in that
directory: `job.json` in, `events.jsonl` (appended as things happen) and
`result.json` (written atomically) out. The harness's own stdout and stderr go
to capped files, so a harness that prints megabytes cannot flood anything.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

RESULT = "result.json"
EVENTS = "events.jsonl"


class Context:
    """What a harness gets besides the example: `llm`, `tools`, `scratch`, `log`, `task`, `seed`."""

    def __init__(self, job: dict[str, Any], events) -> None:
        from sia.harness.client import LLMClient

        self._events = events
        self.task: dict[str, Any] = job.get("task", {})
        self.seed: int = int(job.get("seed", 0))
        self.sample: int = int(job.get("sample", 0))
        self.scratch = Path.cwd()
        self.llm = LLMClient(os.environ["SIA_LLM_URL"], job["model"], api_key=os.environ.get("SIA_LLM_KEY"),
                             rollout_id=job["rollout_id"], default_seed=self.seed, timeout_s=float(job.get("timeout_s", 120)))
        self.tools = _Tools(self)

    def emit(self, kind: str, **data: Any) -> None:
        line = json.dumps({"kind": kind, "t": time.time(), "data": data}, default=repr)
        self._events.write(line + "\n")
        self._events.flush()

    def log(self, message: str, **data: Any) -> None:
        """Record a note on the trajectory."""
        self.emit("log", message=str(message)[:2000], **{k: repr(v)[:500] for k, v in data.items()})


class _Tools:
    """Calls to `ctx.tools.call(name, fn, *args)` are recorded as tool_call events."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def call(self, name: str, fn, *args, **kwargs):
        t0 = time.time()
        try:
            result = fn(*args, **kwargs)
        except Exception as e:
            self._ctx.emit("tool_call", name=name, args=repr(args)[:1000], error=f"{type(e).__name__}: {e}", duration_s=time.time() - t0)
            raise
        self._ctx.emit("tool_call", name=name, args=repr(args)[:1000], result=repr(result)[:1000], duration_s=time.time() - t0)
        return result


def _write_result(result: dict[str, Any]) -> None:
    tmp = Path(RESULT + ".tmp")
    tmp.write_text(json.dumps(result, default=repr))
    tmp.replace(RESULT)


def _check_output(output: Any, kind: str) -> str | None:
    if kind in ("text", "program"):
        if not isinstance(output, str):
            return f"solve() returned {type(output).__name__}, expected str"
        return None
    try:
        json.dumps(output)
    except (TypeError, ValueError):
        return f"solve() returned {type(output).__name__}, which is not JSON-serialisable"
    return None


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when sia dies, so a killed run leaves no stray harness behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(os.environ.get("SIA_PARENT_PID", os.getppid())):
        os._exit(1)  # the parent died before the request took effect


def main() -> int:
    _die_with_parent()
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversize writes raise OSError instead of killing us
    job = json.loads(Path("job.json").read_text())
    from sia.harness.sandbox import apply_limits

    apply_limits(job["limits"])
    with open(EVENTS, "a", buffering=1) as events:
        try:
            ctx = Context(job, events)
        except Exception as e:
            _write_result({"status": "error", "error_type": "sandbox", "message": f"{type(e).__name__}: {e}"})
            return 0
        source = job["source"]
        namespace: dict[str, Any] = {"__name__": "harness", "__file__": "harness.py"}
        try:
            code = compile(source, "harness.py", "exec")
        except SyntaxError as e:
            _write_result({"status": "error", "error_type": "harness_syntax", "message": f"line {e.lineno}: {e.msg}"})
            return 0
        try:
            exec(code, namespace)
            solve = namespace.get("solve")
            if not callable(solve):
                _write_result({"status": "error", "error_type": "harness_interface", "message": "harness defines no solve(example, ctx)"})
                return 0
            output = solve(job["example"], ctx)
        except SystemExit as e:
            _write_result({"status": "error", "error_type": "harness_exit", "message": f"harness called sys.exit({e.code!r})"})
            return 0
        except MemoryError:
            _write_result({"status": "error", "error_type": "memory", "message": "MemoryError: the harness hit its memory limit"})
            return 0
        except BaseException as e:  # KeyboardInterrupt, RecursionError, anything: it is data, not a crash
            tb = traceback.format_exc(limit=8)
            from sia.harness.client import LLMError

            kind = "policy" if isinstance(e, LLMError) else "harness_exception"
            _write_result({"status": "error", "error_type": kind, "message": f"{type(e).__name__}: {str(e)[:1000]}", "traceback": tb[-4000:]})
            return 0
        problem = _check_output(output, job.get("output_kind", "text"))
        if problem:
            _write_result({"status": "error", "error_type": "harness_output", "message": problem, "output": repr(output)[:500]})
            return 0
        try:
            _write_result({"status": "ok", "output": output})
        except OSError as e:  # e.g. an output larger than the file-size limit
            _write_result({"status": "error", "error_type": "harness_output", "message": f"output could not be written: {e}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
