"""Runs one rollout of a harness in a sandbox and reads back what it did, as data.

Each rollout is a fresh process (`sia.harness.child`) isolated as
`sia.harness.isolation` describes: inside bubblewrap's namespaces with
rollout-wide memory and process limits where the machine allows, else as a
plain limited process. It reaches the model only through its door to the
policy service (`sia.policy.service.Door`), and reports through a pipe that
the parent reads with limits (`sia.harness.outputs`). A wall-clock timeout
ends it and every process it started.

Whatever happens, the parent gets a `SandboxResult`: a crash, hang, exit,
limit, bad output or forged record is a typed error, never an exception in sia.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sia.harness import isolation as iso
from sia.harness.cgroups import Cgroups
from sia.harness.outputs import OutputError, parse


@dataclass
class SandboxLimits:
    timeout_s: float = 60.0
    """Wall-clock limit of one rollout: every process of the rollout dies at it."""
    cpu_s: int = 120
    """CPU-time limit of each process (RLIMIT_CPU)."""
    memory_mb: int = 2048
    """Memory of the rollout as a whole, children included (a cgroup, else sia's watch)."""
    max_procs: int = 64
    """Processes of the rollout as a whole (a pids cgroup, else RLIMIT_NPROC in the user namespace)."""
    file_mb: int = 16
    """Largest file the harness may write, its stdout included (RLIMIT_FSIZE)."""
    max_files: int = 256
    """Open file descriptors (RLIMIT_NOFILE)."""
    disk_mb: int = 256
    """Size of the private scratch folder (a tmpfs inside bubblewrap)."""
    output_mb: float = 1.0
    """Largest output a harness may return; larger is a harness_output error."""
    events_mb: float = 4.0
    """Everything the rollout process may report (events and result); more is a harness_output error."""
    isolation: str = "auto"
    """auto (bubblewrap where it runs, else a process), bwrap, or process."""


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


def _signal_name(code: int) -> str:
    try:
        name = signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"
    reason = {"SIGXCPU": " (CPU time limit)", "SIGKILL": " (killed)", "SIGSEGV": " (segfault)", "SIGXFSZ": " (file size limit)"}
    return name + reason.get(name, "")


class _Watch:
    """Reads the report pipe until it closes or the deadline passes, enforcing sizes and, without cgroups, memory."""

    def __init__(self, proc: subprocess.Popen, fd: int, limits: SandboxLimits, watch_memory: bool) -> None:
        self.proc, self.fd, self.limits, self.watch_memory = proc, fd, limits, watch_memory
        self.data = bytearray()
        self.truncated = self.timed_out = False
        self.killed_for: str | None = None

    def run(self, deadline: float) -> None:
        cap = int(self.limits.events_mb * 1024 * 1024)
        next_check = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= deadline:
                self.timed_out = True
                return
            if self.watch_memory and now >= next_check:
                rss, procs = iso.tree_memory(self.proc.pid)
                if rss > self.limits.memory_mb * 1024 * 1024:
                    self.killed_for = f"the rollout's processes used {rss / 2**20:.0f} MB, over its {self.limits.memory_mb} MB limit"
                    return
                next_check = now + 0.2
            exited = self.proc.poll() is not None
            ready, _, _ = select.select([self.fd], [], [], 0.05 if exited else min(0.2, deadline - now))
            if not ready:
                if exited:
                    return  # the sandbox ended; whatever it started dies with it
                continue
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return  # every writer closed its end: the rollout finished
            if len(self.data) + len(chunk) > cap:
                self.truncated = True
                return
            self.data += chunk


def run_in_sandbox(source: str, example: dict[str, Any], *, door, task_info: dict[str, Any], seed: int = 0, sample: int = 0,
                   output_kind: str = "text", limits: SandboxLimits | None = None) -> SandboxResult:
    """Run `solve(example, ctx)` from `source` in a fresh sandboxed process; `door` is its way to the policy."""
    limits = limits or SandboxLimits()
    how = iso.detect(limits.isolation)
    host = Path(tempfile.mkdtemp(prefix="sia-rollout-"))
    cgroups = None
    try:
        kernel_memory = how.kernel and bool(how.cgroups)
        child_limits = {"cpu_s": limits.cpu_s, "file_mb": limits.file_mb, "max_files": limits.max_files,
                        "max_procs": limits.max_procs, "address_space_mb": None if kernel_memory else max(limits.memory_mb, 256)}
        job = {"source": source, "example": example, "task": task_info, "seed": seed, "sample": sample, "output_kind": output_kind,
               "timeout_s": limits.timeout_s, "limits": child_limits,
               "llm": {"socket": iso.DOOR if how.kernel else door.socket, "token": door.token, "model": door.model}}
        (host / "job.json").write_text(json.dumps(job))
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        r, w = os.pipe()
        if how.kernel:
            env.update(HOME=iso.WORK, TMPDIR="/tmp")
            command = iso.bwrap_command(host / "job.json", door.socket, w, limits.disk_mb, env)
            if how.cgroups:
                cgroups = Cgroups(how.cgroups, limits.memory_mb, limits.max_procs)
                command = cgroups.wrap(command)
            cwd, popen_env = host, {"PATH": env["PATH"]}
        else:
            work = host / "work"
            work.mkdir()
            env.update(HOME=str(work), TMPDIR=str(work), SIA_PARENT_PID=str(os.getpid()))
            command, cwd, popen_env = iso.process_command(host / "job.json", w), work, env
        t0 = time.monotonic()
        with open(host / "stdout.txt", "wb") as out, open(host / "stderr.txt", "wb") as err:
            try:
                proc = subprocess.Popen(command, cwd=cwd, env=popen_env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                        pass_fds=(w,), start_new_session=True)
            finally:
                os.close(w)
            watch = _Watch(proc, r, limits, watch_memory=not kernel_memory)
            try:
                watch.run(t0 + limits.timeout_s)
                if not (watch.timed_out or watch.truncated or watch.killed_for):
                    try:
                        proc.wait(timeout=max(0.0, t0 + limits.timeout_s - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        watch.timed_out = True
            finally:
                os.close(r)
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the sandbox and, through its pid namespace, all it started
                except ProcessLookupError:
                    pass
                proc.wait()
                if cgroups is not None:
                    memory_hit = cgroups.memory_hit()
                    cgroups.kill_and_remove()
                    cgroups = None
                else:
                    memory_hit = False
        return _result(watch, proc, host, limits, time.monotonic() - t0, memory_hit)
    finally:
        if cgroups is not None:
            cgroups.kill_and_remove()
        shutil.rmtree(host, ignore_errors=True)


def _result(watch: _Watch, proc: subprocess.Popen, host: Path, limits: SandboxLimits, duration: float,
            memory_hit: bool) -> SandboxResult:
    common = dict(stdout_tail=_tail(host / "stdout.txt"), stderr_tail=_tail(host / "stderr.txt"), duration_s=duration,
                  exit_code=proc.returncode)
    try:
        report = parse(bytes(watch.data), int(limits.output_mb * 1024 * 1024), watch.truncated)
    except OutputError as e:
        return SandboxResult("error", error_type="harness_output", message=str(e), **common)
    common["events"] = report.events
    if watch.killed_for:
        return SandboxResult("error", error_type="memory", message=watch.killed_for, **common)
    if memory_hit:  # a process of the rollout was killed at the limit, whatever the rest then reported
        return SandboxResult("error", error_type="memory", message=f"the rollout went over its {limits.memory_mb} MB memory limit",
                             **common)
    if watch.timed_out:
        return SandboxResult("error", error_type="timeout", message=f"no result within {limits.timeout_s:g}s wall-clock limit", **common)
    res = report.result
    if res is None:
        code = proc.returncode
        why = _signal_name(code) if code is not None and code < 0 else f"exit code {code}"
        return SandboxResult("error", error_type="crash", message=f"harness process ended without a result ({why})", **common)
    if res["status"] == "ok":
        return SandboxResult("ok", output=res["output"], **common)
    message = res["message"] + ("\n" + res["traceback"] if res.get("traceback") else "")
    return SandboxResult("error", error_type=res["error_type"], message=message, **common)
