"""Agent-written programs run by a grader: a long-lived sandboxed worker that the grader talks to over pipes.

A task whose output is a program (a kernel, a denoiser) needs its grader to
run that program, and the program is as untrusted as any harness. A
`ProgramWorker` starts a runner script of the task's in the same sandbox as
rollouts (`sia.harness.isolation`: bubblewrap namespaces, rollout-wide limits,
no network, no door to the policy). The grader sends JSON commands on the
worker's stdin and reads one JSON line back per command.

Everything inside the worker is the program's to tamper with, runner
included. A grader therefore decides nothing from what the worker says about
itself, and the files it shares with the worker cannot be turned against it:

- **Inputs** go to a folder the worker sees read-only (`/in`): the runner, the
  program and each input, written by sia under a fresh random name with
  `O_CREAT | O_EXCL | O_NOFOLLOW`, each only when its call starts.
- **Outputs** come back through the worker's one writable folder (`/io`), and
  are read as data: opened relative to that folder with `O_NOFOLLOW |
  O_NONBLOCK`, refused unless a regular file under the caller's size limit. A
  symlink, a FIFO or a device in their place is the program's error, never a
  write or a wait of sia's.
- **Time** is measured from outside (`call` returns the wall time from sending
  to the reply). A worker given `cpus` runs on those CPUs only (a cpuset
  cgroup; without one, the runner's own affinity, which a program could undo)
  with `threads` threads, can be frozen while another worker is timed (the
  cgroup freezer; without one, SIGSTOP to its process tree), and reports the
  CPU time its cgroup used in each call (`last_cpu_s`).

Simplification on purpose: `/io` is a host folder, so a program's files are
bounded one by one (RLIMIT_FSIZE) but not in total.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sia.harness import isolation as iso
from sia.harness.cgroups import Cgroups
from sia.harness.outputs import OutputError, loads
from sia.harness.sandbox import SandboxLimits

IN, IO = "/in", "/io"


class WorkerError(RuntimeError):
    """The worker died, timed out or answered something that is not a reply."""


def pinned_cpus(threads: int) -> tuple[int, ...]:
    """The CPUs a timed program and its reference share: the last `threads` of those this process may use (the first
    ones are where the system and sia's own threads usually run)."""
    mine = sorted(os.sched_getaffinity(0))
    return tuple(mine[-max(1, min(threads, len(mine))):])


class ProgramWorker:
    """`with ProgramWorker(runner_source, files) as w: w.ready(); path = w.put("x", data); reply, s = w.call({...})`.

    `cpus` and `threads` fix where and how wide the program runs (see the module docstring); `freeze()`/`thaw()`
    stop and resume every process of the worker between calls."""

    def __init__(self, runner: str, files: dict[str, str], limits: SandboxLimits | None = None, startup_s: float = 60.0,
                 cpus: tuple[int, ...] = (), threads: int = 1) -> None:
        self.limits = limits or SandboxLimits(timeout_s=600, memory_mb=3072)
        self.how = iso.detect(self.limits.isolation)
        self.host = Path(tempfile.mkdtemp(prefix="sia-program-"))
        self.inbox, self.io = self.host / "in", self.host / "io"
        self.inbox.mkdir()
        self.io.mkdir()
        self._in_fd = os.open(self.inbox, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        self._io_fd = os.open(self.io, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        self.cpus, self.threads, self.last_cpu_s = tuple(cpus), max(1, threads), None
        self._stopped = False
        for name, text in {"runner.py": runner, **files}.items():
            self._write(name, text.encode())
        self.cgroups = None
        limits = {"cpu_s": self.limits.cpu_s, "file_mb": self.limits.file_mb, "max_files": self.limits.max_files,
                  "max_procs": self.limits.max_procs}
        kernel = self.how.kernel
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
               "SIA_LIMITS": json.dumps(limits), "SIA_IN": IN if kernel else str(self.inbox), "SIA_IO": IO if kernel else str(self.io),
               "SIA_CPUS": ",".join(map(str, self.cpus)),
               **{k: str(self.threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}
        if kernel:
            args = [shutil.which("bwrap") or "bwrap", *iso.base_args(self.limits.disk_mb), "--ro-bind", str(self.inbox), IN,
                    "--bind", str(self.io), IO, "--chdir", IO]
            for k, v in {**env, "HOME": IO, "TMPDIR": "/tmp"}.items():
                args += ["--setenv", k, v]
            command = args + ["--", sys.executable, "-I", f"{IN}/runner.py"]
            if self.how.cgroups:
                where = self.how.cgroups + (self.how.timing if self.cpus else ())
                self.cgroups = Cgroups(where, self.limits.memory_mb, self.limits.max_procs, self.cpus)
                command = self.cgroups.wrap(command)
            popen_env = {"PATH": env["PATH"]}
        else:
            command = [sys.executable, "-I", str(self.inbox / "runner.py")]
            popen_env = {**env, "HOME": str(self.io), "TMPDIR": str(self.io)}
        self.stderr = open(self.host / "stderr.txt", "wb")
        self.proc = subprocess.Popen(command, cwd=self.io, env=popen_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, start_new_session=True)
        self.startup_s = startup_s

    # -- files ------------------------------------------------------------------------------
    def _write(self, name: str, data: bytes) -> None:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=self._in_fd)
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    def put(self, tag: str, data: bytes) -> str:
        """Hand the worker `data` under a fresh name in its read-only folder; the path the worker opens it by."""
        name = f"{tag}-{secrets.token_hex(8)}.bin"
        self._write(name, data)
        return f"{IN if self.how.kernel else self.inbox}/{name}"

    def drop(self, path: str) -> None:
        """Remove an input handed over by `put` (the worker's call is over)."""
        try:
            os.unlink(os.path.basename(path), dir_fd=self._in_fd)
        except FileNotFoundError:
            pass

    def out_path(self, tag: str) -> str:
        """A fresh name for the worker to write an output to, as the worker sees it."""
        return f"{IO if self.how.kernel else self.io}/{tag}-{secrets.token_hex(8)}.bin"

    def take(self, path: str, max_bytes: int) -> bytes:
        """The output the worker wrote at `path` (from `out_path`), read as data and removed: a regular file of at most
        `max_bytes`, opened without following a link or waiting on a FIFO; WorkerError otherwise."""
        name = os.path.basename(path)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=self._io_fd)
        except OSError as e:
            raise WorkerError(f"no output file to read ({e.strerror})") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise WorkerError("the output is not a regular file")
            if st.st_size > max_bytes:
                raise WorkerError(f"the output is {st.st_size} bytes; at most {max_bytes} were expected")
            chunks, size = [], 0
            while chunk := os.read(fd, min(1 << 20, max_bytes + 1 - size)):
                chunks.append(chunk)
                size += len(chunk)
                if size > max_bytes:
                    raise WorkerError(f"the output grew past {max_bytes} bytes while it was read")
            return b"".join(chunks)
        finally:
            os.close(fd)
            try:
                os.unlink(name, dir_fd=self._io_fd)
            except OSError:
                pass

    # -- timing -----------------------------------------------------------------------------
    def pinning(self) -> str:
        """How the worker's CPUs are fixed and how it is stopped, for a grade's timing note."""
        if not self.cpus:
            return "not pinned"
        cpus = f"CPU {','.join(map(str, self.cpus))}, {self.threads} thread{'s' if self.threads > 1 else ''}"
        if self.cgroups is not None and self.cgroups.can_freeze:
            return f"{cpus} (cpuset cgroup), the side not timed frozen by its cgroup"
        return f"{cpus} (affinity only), the side not timed stopped by SIGSTOP"

    def freeze(self) -> None:
        """Stop every process of the worker until `thaw`."""
        self._signal_all(True)

    def thaw(self) -> None:
        self._signal_all(False)

    def _signal_all(self, stop: bool) -> None:
        if stop == self._stopped:
            return
        self._stopped = stop
        if self.cgroups is not None and self.cgroups.can_freeze:
            self.cgroups.freeze(stop)
            return
        for _ in range(2 if stop else 1):  # a second pass stops what forked during the first
            for pid in iso.tree(self.proc.pid):
                try:
                    os.kill(pid, signal.SIGSTOP if stop else signal.SIGCONT)
                except ProcessLookupError:
                    pass

    def cpu_seconds(self) -> float | None:
        return self.cgroups.cpu_seconds() if self.cgroups is not None else None

    # -- commands ---------------------------------------------------------------------------
    def ready(self) -> dict[str, Any]:
        """The runner's answer once it has loaded the program (workers start in parallel; ask each when needed)."""
        return self.call({"cmd": "ready"}, timeout_s=self.startup_s)[0]

    def call(self, command: dict[str, Any], timeout_s: float = 60.0) -> tuple[dict[str, Any], float]:
        """Send `command`; return the worker's reply and the wall seconds from sending to the reply (and set
        `last_cpu_s`, the CPU seconds its cgroup used meanwhile, or None)."""
        self.thaw()
        line = (json.dumps(command) + "\n").encode()
        cpu0 = self.cpu_seconds()
        t0 = time.perf_counter()
        try:
            self.proc.stdin.write(line)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerError(f"the program's worker is gone ({self._why()})") from None
        out = self.proc.stdout.fileno()
        buf = b""
        deadline = t0 + max(0.0, timeout_s)
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
        cpu1 = self.cpu_seconds()
        self.last_cpu_s = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
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
        if self.cgroups is None and self._stopped:
            self.thaw()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.cgroups is not None:
            self.cgroups.kill_and_remove()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.stderr):
            try:
                f.close()
            except OSError:
                pass
        for fd in (self._in_fd, self._io_fd):
            os.close(fd)
        shutil.rmtree(self.host, ignore_errors=True)

    def __enter__(self) -> ProgramWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


RUNNER_PRELUDE = '''
import json, os, resource, sys

IN, IO = os.environ.get("SIA_IN", "/in"), os.environ.get("SIA_IO", "/io")
if os.environ.get("SIA_CPUS"):
    os.sched_setaffinity(0, {int(c) for c in os.environ["SIA_CPUS"].split(",")})
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
"""The start of every task's runner: its folders (`IN`, read-only: runner, program, inputs; `IO`, where it writes
outputs), its CPUs, rlimits, a private channel for answers, and the command loop."""
