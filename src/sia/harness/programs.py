"""Agent-written programs run by a grader: a long-lived sandboxed worker that the grader talks to over pipes.

A task whose output is a program (a kernel, a denoiser) needs its grader to
run that program, and the program is as untrusted as any harness. A
`ProgramWorker` starts a runner script of the task's in the same sandbox as
rollouts (`sia.harness.isolation`: bubblewrap namespaces, rollout-wide limits,
no network, no door to the policy), with one private read-write folder
mounted at `/io` for data the grader exchanges with it. The grader sends JSON
commands on the worker's stdin and reads one JSON line back per command.

Everything inside the worker is the program's to tamper with, runner
included. A grader therefore decides nothing from what the worker says about
itself: it times each command from outside (`call` returns the wall time from
sending to the reply), hands over inputs only when it starts the clock, and
reads outputs itself, as data, from `/io`.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sia.harness import isolation as iso
from sia.harness.outputs import OutputError, loads
from sia.harness.sandbox import SandboxLimits

IO = "/io"


class WorkerError(RuntimeError):
    """The worker died, timed out or answered something that is not a reply."""


class ProgramWorker:
    """`with ProgramWorker(runner_source, files) as w: w.ready(); reply, seconds = w.call({...})`."""

    def __init__(self, runner: str, files: dict[str, str], limits: SandboxLimits | None = None, startup_s: float = 60.0) -> None:
        self.limits = limits or SandboxLimits(timeout_s=600, memory_mb=3072)
        self.how = iso.detect(self.limits.isolation)
        self.host = Path(tempfile.mkdtemp(prefix="sia-program-"))
        self.io = self.host / "io"
        self.io.mkdir()
        (self.io / "runner.py").write_text(runner)
        for name, text in files.items():
            (self.io / name).write_text(text)
        self.cgroups = None
        limits = {"cpu_s": self.limits.cpu_s, "file_mb": self.limits.file_mb, "max_files": self.limits.max_files,
                  "max_procs": self.limits.max_procs}
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
               "OMP_NUM_THREADS": os.environ.get("SIA_PROGRAM_THREADS", "1"), "SIA_LIMITS": json.dumps(limits)}
        if self.how.kernel:
            args = [shutil.which("bwrap") or "bwrap", *iso.base_args(self.limits.disk_mb), "--bind", str(self.io), IO, "--chdir", IO]
            for k, v in {**env, "HOME": IO, "TMPDIR": "/tmp"}.items():
                args += ["--setenv", k, v]
            command = args + ["--", sys.executable, "-I", f"{IO}/runner.py"]
            if self.how.cgroups:
                self.cgroups = iso.Cgroups(self.how.cgroups, self.limits.memory_mb, self.limits.max_procs)
                command = self.cgroups.wrap(command)
            popen_env = {"PATH": env["PATH"]}
        else:
            command, popen_env = [sys.executable, "-I", str(self.io / "runner.py")], {**env, "HOME": str(self.io), "TMPDIR": str(self.io)}
        self.stderr = open(self.host / "stderr.txt", "wb")
        self.proc = subprocess.Popen(command, cwd=self.io, env=popen_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, start_new_session=True)
        self.startup_s = startup_s

    def ready(self) -> dict[str, Any]:
        """The runner's answer once it has loaded the program (workers start in parallel; ask each when needed)."""
        return self.call({"cmd": "ready"}, timeout_s=self.startup_s)[0]

    def path(self, name: str) -> Path:
        """The host path of `name` in the worker's /io folder."""
        return self.io / name

    def call(self, command: dict[str, Any], timeout_s: float = 60.0) -> tuple[dict[str, Any], float]:
        """Send `command`; return the worker's reply and the wall seconds from sending to the reply."""
        line = (json.dumps(command) + "\n").encode()
        t0 = time.perf_counter()
        try:
            self.proc.stdin.write(line)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerError(f"the program's worker is gone ({self._why()})") from None
        out = self.proc.stdout.fileno()
        buf = b""
        deadline = t0 + timeout_s
        while not buf.endswith(b"\n"):
            left = deadline - time.perf_counter()
            if left <= 0:
                raise WorkerError(f"no answer within {timeout_s:g}s")
            ready, _, _ = select.select([out], [], [], left)
            if not ready:
                continue
            chunk = os.read(out, 65536)
            if not chunk:
                raise WorkerError(f"the program's worker ended ({self._why()})")
            buf += chunk
            if len(buf) > 1_000_000:
                raise WorkerError("the worker's answer is too long")
        seconds = time.perf_counter() - t0
        try:
            reply = loads(buf.strip(), "the worker's answer")
        except OutputError as e:
            raise WorkerError(str(e)) from None
        if not isinstance(reply, dict):
            raise WorkerError("the worker's answer is not an object")
        return reply, seconds

    def _why(self) -> str:
        code = self.proc.poll()
        tail = (self.host / "stderr.txt").read_bytes()[-600:].decode("utf-8", "replace").strip()
        if self.cgroups is not None and self.cgroups.memory_hit():
            return f"memory limit of {self.limits.memory_mb} MB"
        return f"exit code {code}" + (f": {tail.splitlines()[-1]}" if tail else "")

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.stderr):
            try:
                f.close()
            except OSError:
                pass
        if self.cgroups is not None:
            self.cgroups.kill_and_remove()
        shutil.rmtree(self.host, ignore_errors=True)

    def __enter__(self) -> "ProgramWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


RUNNER_PRELUDE = '''
import json, os, resource, sys

_limits = json.loads(os.environ.get("SIA_LIMITS", "{}"))
if _limits:
    resource.setrlimit(resource.RLIMIT_CPU, (_limits["cpu_s"], _limits["cpu_s"] + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (_limits["file_mb"] << 20, _limits["file_mb"] << 20))
    resource.setrlimit(resource.RLIMIT_NOFILE, (_limits["max_files"], _limits["max_files"]))
    try:
        resource.setrlimit(resource.RLIMIT_NPROC, (_limits["max_procs"], _limits["max_procs"]))
    except (ValueError, OSError):
        pass
_out = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)  # the program's prints go to stderr, never into the answers


def reply(**data):
    _out.write(json.dumps(data) + "\\n")
    _out.flush()


def commands():
    for line in sys.stdin:
        if line.strip():
            yield json.loads(line)
'''
"""The start of every task's runner: rlimits, a private channel for answers, and the command loop."""
