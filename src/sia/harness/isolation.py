"""How a rollout process is isolated: bubblewrap namespaces where they work, else a plain process; cgroups where they can be made.

**bwrap** (Debian's `bubblewrap`): new user, pid, ipc, uts, cgroup and network
namespaces, a new session, `--die-with-parent`, no environment but what is set.
The root is empty but for read-only binds of what Python needs (`/usr`, the
Python installation and its site-packages, with sia's own package hidden if it
lies there) and four files of sia (the child and `ctx.llm`'s client). The
working directory is a private size-limited tmpfs, `/proc` is the sandbox's
own, the job is one read-only file and the policy is one Unix socket. There is
no network at all: the loopback of a new network namespace reaches nothing.

**Rollout-wide limits.** As root, each rollout gets a memory and a pids cgroup
(v1 or v2, whichever is mounted writable), so memory and processes are counted
for all its processes together and the kernel enforces them. Without cgroups
(a non-root user here), memory is watched: the parent sums the resident memory
of the rollout's process tree a few times a second and kills the rollout over
the limit, and the user namespace makes RLIMIT_NPROC count the sandbox's
processes. CPU time is bounded per process (RLIMIT_CPU) and for the rollout as
a whole by the wall-clock timeout, at which every process of the rollout dies:
the pid namespace's init takes them all with it, double-forked daemons included.

**process** (no bubblewrap: macOS, a container without user namespaces): a
process in its own session with rlimits and a scrubbed environment. It reads
what the user can read, so sia runs only its own template harnesses there
unless the user passes `--unsafe-sandbox` (see `sia.harness.checks`).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from sia.harness import cgroups

SANDBOX_ROOT = "/opt/sia"
"""Where sia's child code is bound inside the sandbox."""
JOB = "/run/sia/job.json"
DOOR = "/run/sia/policy.sock"
WORK = "/sandbox"
CHILD_FILES = ("__init__.py", "harness/__init__.py", "harness/child.py", "harness/client.py")
BOOT = "import runpy, sys; sys.path.insert(0, {root!r}); runpy.run_module('sia.harness.child', run_name='__main__', alter_sys=True)"


@dataclass(frozen=True)
class Isolation:
    kind: str
    """bwrap or process."""
    cgroups: tuple[tuple[str, str], ...] = ()
    """(controller, parent folder) pairs where a rollout's cgroups are made: memory and pids."""
    timing: tuple[tuple[str, str], ...] = ()
    """The same for a timed program's cpuset, freezer and CPU clock (`sia.harness.cgroups.TIMING`), or ()."""
    note: str = ""
    """Why the weaker kind was chosen, said once at start."""

    @property
    def kernel(self) -> bool:
        return self.kind == "bwrap"

    def describe(self) -> str:
        if self.kind == "process":
            return f"process sandbox ({self.note})"
        limits = "memory and process cgroups" if self.cgroups else "memory watched by sia (no writable cgroups)"
        return f"bubblewrap namespaces, {limits}"


def _sia_dir() -> Path:
    return Path(__file__).resolve().parents[1]


@functools.cache
def detect(kind: str = "auto") -> Isolation:
    """The isolation this machine offers (probed once per process): bwrap if it runs, else process."""
    if kind == "process":
        return Isolation("process", note="asked for")
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        why = "bubblewrap is not installed (apt-get install bubblewrap)"
    else:
        r = subprocess.run([bwrap, *base_args(), "--", sys.executable, "-I", "-c", "print('ok')"],
                           capture_output=True, text=True, timeout=30)
        if r.returncode == 0 and r.stdout.strip() == "ok":
            limits = cgroups.parents(cgroups.LIMITS)
            return Isolation("bwrap", limits, cgroups.parents(cgroups.TIMING) if limits else ())
        why = f"bubblewrap cannot run here ({(r.stderr.strip().splitlines() or ['no output'])[-1][:160]})"
    if kind == "bwrap":
        from sia.errors import HarnessError

        raise HarnessError(f"the bubblewrap sandbox was asked for, but {why}", "install bubblewrap, or enable user namespaces")
    return Isolation("process", note=why)


def base_args(disk_mb: int = 64) -> list[str]:
    """Namespaces, private tmpfs folders, and the read-only system every sandbox starts from.

    The tmpfs folders come first, so that a Python installation under /tmp (or
    anywhere) is bound on top of them rather than hidden by them.
    """
    args = ["--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--clearenv", "--proc", "/proc", "--dev", "/dev",
            "--size", str(64 * 1024 * 1024), "--tmpfs", "/tmp", "--size", str(disk_mb * 1024 * 1024), "--tmpfs", WORK]
    args += ["--ro-bind", "/usr", "/usr"]
    for link in ("lib", "lib64", "bin", "sbin"):
        p = Path("/" + link)
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), f"/{link}"]
        elif p.is_dir():
            args += ["--ro-bind", str(p), f"/{link}"]
    args += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    for prefix in sorted({sys.base_prefix, sys.prefix}):
        args += ["--ro-bind", prefix, prefix]
    sia_dir = _sia_dir()
    if any(sia_dir.is_relative_to(p) for p in (sys.base_prefix, sys.prefix)):
        args += ["--tmpfs", str(sia_dir)]  # an installed sia's package (task data, labels) stays hidden
    for rel in CHILD_FILES:
        args += ["--ro-bind", str(sia_dir / rel), f"{SANDBOX_ROOT}/sia/{rel}"]
    return args


def bwrap_command(job: Path, door: str, out_fd: int, disk_mb: int, env: dict[str, str]) -> list[str]:
    args = [shutil.which("bwrap") or "bwrap", *base_args(disk_mb), "--chdir", WORK, "--ro-bind", str(job), JOB, "--bind", door, DOOR]
    for k, v in env.items():
        args += ["--setenv", k, v]
    return args + ["--", sys.executable, "-I", "-c", BOOT.format(root=SANDBOX_ROOT), JOB, str(out_fd)]


def process_command(job: Path, out_fd: int) -> list[str]:
    return [sys.executable, "-I", "-m", "sia.harness.child", str(job), str(out_fd)]


def tree(root: int) -> list[int]:
    """`root` and its descendants, from /proc (a double-forked daemon of a sandbox is reparented to its pid namespace's
    init, which is itself a descendant)."""
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        try:
            for task in Path(f"/proc/{pid}/task").iterdir():
                stack += [int(x) for x in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
        found.append(pid)
    return found


def tree_memory(root: int) -> tuple[int, int]:
    """(resident bytes, processes) of `root` and its descendants, from /proc (the watch used without cgroups)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total, count = 0, 0
    for pid in tree(root):
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
            count += 1
        except (OSError, ValueError, IndexError):
            continue
    return total, count
