"""A sandbox's cgroups: memory and process limits for every rollout; a CPU set, a freezer and a CPU clock for programs.

Every rollout gets a memory and a pids cgroup where this process may make them
(cgroup v1, or v2 with both controllers delegated: as root here), so the kernel
counts all the rollout's processes together. A program a grader times
(`sia.harness.programs`) also gets a cpuset (so it runs on the CPUs it is given,
whatever affinity it sets itself), a freezer (so it stands still while the other
side of a comparison is timed) and a CPU-time counter. Processes cannot leave
their cgroups: the sandbox has its own cgroup namespace and no cgroupfs mounted.

Without writable cgroups (a non-root user) each of these degrades as its caller
says: memory is watched by sia, a program's CPUs are set by affinity, and its
processes are stopped with SIGSTOP (`sia.harness.programs`).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

LIMITS = ("memory", "pids")
"""The controllers every rollout is limited by."""
TIMING = ("cpuset", "freezer", "cpuacct")
"""The controllers a timed program is pinned, frozen and clocked by."""
BASE = Path("/sys/fs/cgroup")


def _own_paths() -> dict[str, str]:
    """This process's cgroup path per v1 controller ("" for the v2 hierarchy)."""
    own: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        for c in (ctrls.split(",") if ctrls else [""]):
            own[c] = path.lstrip("/")
    return own


def parents(controllers: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """(controller, folder) where this process may make a child cgroup with each of `controllers`, or () if any is
    missing. v1 first; on v2 the freezer and the CPU clock are in every cgroup, cpuset must be delegated."""
    try:
        own = _own_paths()
    except (OSError, ValueError):
        return ()
    found = []
    for ctrl in controllers:
        v1 = BASE / ctrl / own.get(ctrl, "")
        v2 = BASE / own.get("", "")
        delegated = (v2 / "cgroup.subtree_control").read_text().split() if (v2 / "cgroup.subtree_control").exists() else None
        if (v1 / "cgroup.procs").exists():
            folder = v1
        elif delegated is not None and (ctrl in delegated or ctrl in ("freezer", "cpuacct")):
            folder = v2
        else:
            return ()
        probe = folder / f"sia-probe-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        try:
            probe.mkdir()
            probe.rmdir()
        except OSError:
            return ()
        found.append((ctrl, str(folder)))
    return tuple(found)


class Cgroups:
    """One sandbox's cgroups: made before it starts, read while and after it runs, removed at the end."""

    def __init__(self, where: tuple[tuple[str, str], ...], memory_mb: int, max_procs: int, cpus: tuple[int, ...] = ()) -> None:
        self.paths: dict[str, Path] = {}
        self.frozen = False
        name = f"sia-{uuid.uuid4().hex[:12]}"
        for ctrl, parent in where:
            p = Path(parent) / name
            if not p.exists():
                p.mkdir()
            self.paths[ctrl] = p
        mem, pids, cpuset = self.paths.get("memory"), self.paths.get("pids"), self.paths.get("cpuset")
        if mem is not None:
            limit = str(memory_mb * 1024 * 1024)
            for f in ("memory.limit_in_bytes", "memory.max"):
                if (mem / f).exists():
                    (mem / f).write_text(limit)
            for f in ("memory.memsw.limit_in_bytes", "memory.swap.max"):
                if (mem / f).exists():
                    try:
                        (mem / f).write_text(limit if f.endswith("bytes") else "0")
                    except OSError:
                        pass
        if pids is not None:
            (pids / "pids.max").write_text(str(max_procs))
        if cpuset is not None and cpus:
            (cpuset / "cpuset.cpus").write_text(",".join(map(str, cpus)))
            mems = cpuset / "cpuset.mems"
            if (cpuset / "cpuset.mem_exclusive").exists() and not mems.read_text().strip():  # v1: no task before memory nodes
                mems.write_text((cpuset.parent / "cpuset.mems").read_text().strip() or "0")

    def wrap(self, command: list[str]) -> list[str]:
        """`command` started inside the cgroups (a shell moves itself in, then execs), so no process escapes them."""
        moves = " && ".join(f"echo $$ > {p / 'cgroup.procs'}" for p in dict.fromkeys(self.paths.values()))
        return ["/bin/sh", "-c", f'{moves} && exec "$@"', "sia-sandbox", *command]

    def memory_hit(self) -> bool:
        """Did the kernel kill a process of the rollout for going over its memory limit?"""
        mem = self.paths.get("memory")
        for f in ("memory.events", "memory.oom_control"):
            try:
                lines = (mem / f).read_text().splitlines() if mem is not None else []
            except OSError:
                continue
            for line in lines:
                parts = line.split()
                if len(parts) == 2 and parts[0] == "oom_kill" and int(parts[1]) > 0:
                    return True
        return False

    @property
    def can_freeze(self) -> bool:
        return "freezer" in self.paths

    def freeze(self, frozen: bool = True, wait_s: float = 2.0) -> bool:
        """Freeze (or thaw) every process of the sandbox; True once the kernel says it is done."""
        p = self.paths.get("freezer")
        if p is None:
            return False
        v1 = (p / "freezer.state").exists()
        (p / ("freezer.state" if v1 else "cgroup.freeze")).write_text(("FROZEN" if frozen else "THAWED") if v1 else str(int(frozen)))
        self.frozen = frozen
        deadline = time.monotonic() + wait_s
        while True:
            if v1:
                done = (p / "freezer.state").read_text().strip() == ("FROZEN" if frozen else "THAWED")
            else:
                done = f"frozen {int(frozen)}" in (p / "cgroup.events").read_text()
            if done or time.monotonic() > deadline:
                return done
            time.sleep(0.001)

    def cpu_seconds(self) -> float | None:
        """CPU time used so far by every process of the sandbox, or None without a CPU clock."""
        p = self.paths.get("cpuacct")
        if p is None:
            return None
        try:
            if (p / "cpuacct.usage").exists():
                return int((p / "cpuacct.usage").read_text()) / 1e9
            for line in (p / "cpu.stat").read_text().splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) / 1e6
        except (OSError, ValueError):
            return None
        return None

    def kill_and_remove(self) -> None:
        if self.frozen:
            self.freeze(False, wait_s=0.5)  # a frozen process takes its SIGKILL only once thawed
        for _ in range(50):
            pids = set()
            for p in self.paths.values():
                try:
                    pids |= {int(x) for x in (p / "cgroup.procs").read_text().split()}
                except OSError:
                    pass
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            removed = True
            for p in dict.fromkeys(self.paths.values()):
                try:
                    p.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    removed = False
            if removed:
                return
            time.sleep(0.02)
