"""The process a rollout runs in: loads the harness, calls `solve(example, ctx)`, reports what happened.

Started by `sia.harness.sandbox` (inside bubblewrap when it can run) as
`python -I ... child JOB_FILE OUT_FD`. It reads its job (the harness source,
the visible example, the task's public info, the door to the policy) from
JOB_FILE and writes JSON lines to the inherited file descriptor OUT_FD: events
as they happen (`log`, `tool_call`), then one `result`. Nothing else of sia
is visible to it, and it imports only `sia.harness.client`.

Everything written to OUT_FD is untrusted: the harness runs in this process
and can write there too. The parent reads it with limits and a schema
(`sia.harness.outputs`) and never takes a model call, a timeout or a crash
from it: those come from the policy service and the parent's own watch.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any


def apply_limits(limits: dict[str, Any]) -> None:
    """Per-process rlimits; the rollout-wide limits (memory, processes) are the sandbox's (cgroup or watch)."""
    mb = 1024 * 1024
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_s"], limits["cpu_s"] + 5))
    if limits.get("address_space_mb"):
        resource.setrlimit(resource.RLIMIT_AS, (limits["address_space_mb"] * mb, limits["address_space_mb"] * mb))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_mb"] * mb, limits["file_mb"] * mb))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["max_files"], limits["max_files"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["max_procs"], limits["max_procs"]))
    except (ValueError, OSError):
        pass


class Context:
    """What a harness gets besides the example: `llm`, `tools`, `scratch`, `log`, `task`, `seed`."""

    def __init__(self, job: dict[str, Any], out) -> None:
        from sia.harness.client import LLMClient

        self._out = out
        self.task: dict[str, Any] = job.get("task", {})
        self.seed: int = int(job.get("seed", 0))
        self.sample: int = int(job.get("sample", 0))
        self.scratch = Path.cwd()
        door = job["llm"]
        self.llm = LLMClient("http://sia/v1", door["model"], api_key=door["token"], unix_socket=door["socket"],
                             default_seed=self.seed, timeout_s=float(job.get("timeout_s", 120)))
        self.tools = _Tools(self)

    def emit(self, kind: str, **data: Any) -> None:
        _write(self._out, {"kind": kind, "t": time.time(), "data": data})

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


def _write(out, record: dict[str, Any]) -> None:
    out.write(json.dumps(record, default=repr) + "\n")
    out.flush()


def _result(out, status: str, **data: Any) -> None:
    try:
        _write(out, {"kind": "result", "status": status, **data})
    except (OSError, ValueError, RecursionError, TypeError) as e:  # an output too large or too deep to write
        _write(out, {"kind": "result", "status": "error", "error_type": "harness_output", "message": f"output could not be written: {e}"})


def _check_output(output: Any, kind: str) -> str | None:
    if kind in ("text", "program"):
        if not isinstance(output, str):
            return f"solve() returned {type(output).__name__}, expected str"
        return None
    try:
        json.dumps(output)
    except (TypeError, ValueError, RecursionError):
        return f"solve() returned {type(output).__name__}, which is not JSON-serialisable"
    return None


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies, so a killed sia leaves no stray harness behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    expected = os.environ.get("SIA_PARENT_PID")
    if expected and os.getppid() != int(expected):
        os._exit(1)  # the parent died before the request took effect


def run(job: dict[str, Any], out) -> None:
    try:
        ctx = Context(job, out)
    except Exception as e:
        return _result(out, "error", error_type="sandbox", message=f"{type(e).__name__}: {e}")
    namespace: dict[str, Any] = {"__name__": "harness", "__file__": "harness.py"}
    # before any harness code: a rollout that times out without this line spent its time starting (the machine's fault)
    _write(out, {"kind": "start", "t": time.time(), "data": {}})
    try:
        code = compile(job["source"], "harness.py", "exec")
    except SyntaxError as e:
        return _result(out, "error", error_type="harness_syntax", message=f"line {e.lineno}: {e.msg}")
    try:
        exec(code, namespace)
        solve = namespace.get("solve")
        if not callable(solve):
            return _result(out, "error", error_type="harness_interface", message="harness defines no solve(example, ctx)")
        output = solve(job["example"], ctx)
    except SystemExit as e:
        return _result(out, "error", error_type="harness_exit", message=f"harness called sys.exit({e.code!r})")
    except MemoryError:
        return _result(out, "error", error_type="memory", message="MemoryError: the harness hit its memory limit")
    except BaseException as e:  # KeyboardInterrupt, RecursionError, anything: it is data, not a crash
        from sia.harness.client import LLMError

        kind = ("policy_request" if e.refused else "policy") if isinstance(e, LLMError) else "harness_exception"
        tb = traceback.format_exc(limit=8)
        return _result(out, "error", error_type=kind, message=f"{type(e).__name__}: {str(e)[:1000]}", traceback=tb[-4000:])
    problem = _check_output(output, job.get("output_kind", "text"))
    if problem:
        return _result(out, "error", error_type="harness_output", message=problem)
    _result(out, "ok", output=output)


def main(argv: list[str]) -> int:
    _die_with_parent()
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversize writes raise OSError instead of killing us
    job = json.loads(Path(argv[1]).read_text())
    apply_limits(job["limits"])
    with os.fdopen(int(argv[2]), "w", buffering=1, encoding="utf-8") as out:
        run(job, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
