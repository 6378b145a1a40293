"""Runs one rollout of a harness in a separate, limited process.

Each rollout gets a fresh process started with `python -I -m sia.harness.child`
in its own session (so the whole process group can be killed), a scratch
working directory, an environment scrubbed down to a handful of variables, and
rlimits on CPU time, address space, file size, open files and processes. A
wall-clock timeout kills the group. Whatever happens, the parent gets a
`SandboxResult`: a crash, hang, exit or bad return value is data, never an
exception in sia.

Limits of this sandbox, said plainly: it is process isolation, not a container.
The harness can read files the user can read and open network sockets; RLIMIT_NPROC
is not enforced for root. Issue-level guards on proposed harnesses (reads of
hidden labels, network access) are checked before a harness is run.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class SandboxLimits:
    timeout_s: float = 60.0
    """Wall-clock limit of one rollout."""
    cpu_s: int = 120
    """CPU-time limit (RLIMIT_CPU)."""
    memory_mb: int = 2048
    """Address-space limit (RLIMIT_AS)."""
    file_mb: int = 16
    """Largest file the harness may write, stdout included (RLIMIT_FSIZE)."""
    max_procs: int = 256
    """RLIMIT_NPROC (not enforced for root)."""
    max_files: int = 256
    """Open file descriptors (RLIMIT_NOFILE)."""


@dataclass
class SandboxResult:
    status: str  # "ok" | "error"
    output: Any = None
    error_type: str | None = None
    message: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)
    stdout_tail: str = ""
    stderr_tail: str = ""
    duration_s: float = 0.0
    exit_code: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def apply_limits(limits: dict[str, Any]) -> None:
    """Set rlimits on the current process; the sandbox child calls this before loading the harness.

    Done in the child rather than in a `preexec_fn`, which is unsafe in a parent
    that runs threads (the policy service and the rollout pool do).
    """
    mb = 1024 * 1024
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_s"], limits["cpu_s"] + 5))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_mb"] * mb, limits["memory_mb"] * mb))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_mb"] * mb, limits["file_mb"] * mb))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["max_files"], limits["max_files"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["max_procs"], limits["max_procs"]))
    except (ValueError, OSError):
        pass


def _tail(path: Path, n: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - n))
            data = f.read().decode("utf-8", "replace")
        return (f"[{size} bytes, last {n}] " if size > n else "") + data
    except OSError:
        return ""


def _read_events(path: Path, max_events: int = 10_000) -> list[dict[str, Any]]:
    events = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if len(events) >= max_events:
                    break
                try:
                    ev = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line from a killed process
                if isinstance(ev, dict) and isinstance(ev.get("kind"), str):
                    events.append(ev)
    except OSError:
        pass
    return events


def _signal_name(code: int) -> str:
    try:
        name = signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"
    reason = {"SIGXCPU": " (CPU time limit)", "SIGKILL": " (killed)", "SIGSEGV": " (segfault)", "SIGXFSZ": " (file size limit)"}
    return name + reason.get(name, "")


def run_in_sandbox(source: str, example: dict[str, Any], *, rollout_id: str, llm_url: str, llm_key: str | None,
                   model: str, task_info: dict[str, Any], seed: int = 0, sample: int = 0, output_kind: str = "text",
                   limits: SandboxLimits | None = None, keep_dir: Path | None = None) -> SandboxResult:
    """Run `solve(example, ctx)` from `source` in a fresh limited process."""
    limits = limits or SandboxLimits()
    scratch = Path(tempfile.mkdtemp(prefix="sia-rollout-"))
    try:
        job = {"source": source, "example": example, "rollout_id": rollout_id, "model": model, "task": task_info,
               "seed": seed, "sample": sample, "output_kind": output_kind, "timeout_s": limits.timeout_s,
               "limits": asdict(limits)}
        (scratch / "job.json").write_text(json.dumps(job))
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(scratch), "TMPDIR": str(scratch), "LANG": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
               "SIA_LLM_URL": llm_url, "SIA_LLM_KEY": llm_key or "", "SIA_PARENT_PID": str(os.getpid())}
        t0 = time.monotonic()
        with open(scratch / "stdout.txt", "wb") as out, open(scratch / "stderr.txt", "wb") as err:
            proc = subprocess.Popen([sys.executable, "-I", "-m", "sia.harness.child"], cwd=scratch, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err, start_new_session=True)
            timed_out = False
            try:
                proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the harness's children too
                except ProcessLookupError:
                    pass
                proc.wait()
        duration = time.monotonic() - t0
        events = _read_events(scratch / "events.jsonl")
        stdout_tail, stderr_tail = _tail(scratch / "stdout.txt"), _tail(scratch / "stderr.txt")
        common = dict(events=events, stdout_tail=stdout_tail, stderr_tail=stderr_tail, duration_s=duration, exit_code=proc.returncode)
        if timed_out:
            return SandboxResult("error", error_type="timeout", message=f"no result within {limits.timeout_s:g}s wall-clock limit", **common)
        try:
            result = json.loads((scratch / "result.json").read_text())
        except (OSError, json.JSONDecodeError):
            code = proc.returncode
            why = _signal_name(code) if code is not None and code < 0 else f"exit code {code}"
            return SandboxResult("error", error_type="crash", message=f"harness process ended without a result ({why})", **common)
        if result.get("status") == "ok":
            return SandboxResult("ok", output=result.get("output"), **common)
        message = str(result.get("message", ""))
        if result.get("traceback"):
            message += "\n" + str(result["traceback"])
        return SandboxResult("error", error_type=str(result.get("error_type", "harness_exception")), message=message, **common)
    finally:
        if keep_dir is not None:
            shutil.copytree(scratch, keep_dir, dirs_exist_ok=True)
        shutil.rmtree(scratch, ignore_errors=True)
