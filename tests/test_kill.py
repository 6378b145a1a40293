"""A process killed during an evaluation leaves a store that opens and holds every finished rollout."""

import os
import signal
import sqlite3
import subprocess
import time

import pytest
from conftest import SIA

from sia.store.store import Store


def _count(db) -> int:
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM rollouts").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:
        return 0


def _descendants(root: int) -> list[int]:
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                kids = [int(x) for x in open(f"/proc/{pid}/task/{task}/children").read().split()]
                found += kids
                stack += kids
        except OSError:
            continue
    return found


def _sandboxes(parent: int) -> list[int]:
    """Pids of live rollout processes (the harness's Python) started by the sia process `parent`."""
    pids = []
    for pid in _descendants(parent):
        try:
            if (
                b"sia.harness.child" in open(f"/proc/{pid}/cmdline", "rb").read()
                and b"bwrap" not in open(f"/proc/{pid}/cmdline", "rb").read()
            ):
                pids.append(pid)
        except OSError:
            continue
    return pids


def _alive(pids: list[int]) -> list[int]:
    return [p for p in pids if os.path.exists(f"/proc/{p}") and b"sia.harness.child" in open(f"/proc/{p}/cmdline", "rb").read()]


@pytest.mark.model
def test_sigkill_during_eval_loses_no_finished_rollout(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [SIA, "eval", "sentiment", "--split", "val", "--limit", "60", "--concurrency", "4", "--run-dir", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        seen = 0
        while time.monotonic() < deadline and seen < 6:
            time.sleep(0.2)
            seen = _count(run / "sia.db")
        assert seen >= 6, "the evaluation did not get going"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    with Store(run, write=False) as store:
        assert store.integrity() == "ok"
        rows = store.rollouts()
        assert seen <= len(rows) < 60
        for r in rows:
            kinds = [e.kind for e in store.events(r.id)]
            assert kinds[-1] == "grade" and "llm_call" in kinds
    # the lock died with the process: the run directory is writable again
    Store(run).close()


@pytest.mark.model
def test_killed_sia_leaves_no_harness_running(tmp_path, tiny_task):
    """Harnesses stuck in a loop die with sia instead of running on to their CPU limit."""
    harness = tmp_path / "spin.py"
    harness.write_text("def solve(example, ctx):\n    while True:\n        pass\n")
    proc = subprocess.Popen(
        [
            SIA,
            "eval",
            str(tiny_task),
            "--harness",
            str(harness),
            "--timeout",
            "120",
            "--limit",
            "3",
            "--concurrency",
            "3",
            "--run-dir",
            str(tmp_path / "run"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(_sandboxes(proc.pid)) < 3:
            time.sleep(0.2)
        harnesses = _sandboxes(proc.pid)
        assert len(harnesses) == 3
        os.kill(proc.pid, signal.SIGKILL)  # sia only: its sandboxes live in sessions of their own
        proc.wait(timeout=30)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _alive(harnesses):
            time.sleep(0.1)
        assert _alive(harnesses) == []
    finally:
        if proc.poll() is None:
            proc.kill()
