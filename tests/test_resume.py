"""`sia run` killed with SIGKILL at several points; `sia resume` finishes without losing or redoing a rollout."""

import json
import os
import signal
import sqlite3
import subprocess
import time

import pytest
from conftest import SIA

from sia.store.store import Store


def _query(db, sql):
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError:
        return []


def _rollouts(db):
    return dict(_query(db, "SELECT id, created FROM rollouts"))


def _start(*args):
    return subprocess.Popen([SIA, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _kill_when(proc, db, condition, timeout=300):
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"run ended before the kill point: {proc.stderr.read()[-2000:]}")
            if condition():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                return _rollouts(db)
            time.sleep(0.2)
        raise AssertionError("kill point never reached")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.model
def test_kill_at_several_points_then_resume(tmp_path):
    run = tmp_path / "run"
    db = run / "sia.db"
    # the harness lever alone: generation 1 is then a harness edit and its gate (what this test kills), never a weight
    # update sized to the whole train split (the builtin agent's choice between the two follows the machine's speed)
    args = ["run", "sentiment", "--budget", "15m", "--val-limit", "24", "--test-limit", "8", "--analysis-examples", "8",
            "--max-generations", "1", "--levers", "harness", "--run-dir", run]
    # 1: during the baseline validation evaluation
    snap1 = _kill_when(_start(*args), db, lambda: len(_rollouts(db)) >= 6)
    assert len(snap1) >= 6
    # 2: inside the first generation (its proposal is recorded; the gate is running)
    proc = _start("resume", run)
    time.sleep(1)
    second = subprocess.run([SIA, "resume", str(run)], capture_output=True, text=True, timeout=60)
    assert second.returncode == 2 and "in use" in second.stderr, second.stderr  # one writer at a time
    snap2 = _kill_when(proc, db, lambda: bool(_query(db, "SELECT gen FROM generations")) and
                       len(_query(db, "SELECT id FROM rollouts WHERE split = 'val'")) >= 28)
    assert set(snap1) <= set(snap2) and len(snap2) > len(snap1)
    # 3: resume to the end
    done = subprocess.run([SIA, "resume", str(run), "--json"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["status"] == "done" and summary["final"]["test"] is not None and summary["baseline"]["test"] is not None
    final = _rollouts(db)
    for snap in (snap1, snap2):
        for rid, created in snap.items():
            assert final[rid] == created, f"rollout {rid} was lost or redone"
    with Store(run, write=False) as store:
        assert store.integrity() == "ok"
        purposes = [e.purpose for e in store.evaluations()]
        assert len(purposes) == len(set(purposes)), "an evaluation was started twice"
        for ev in store.evaluations():
            assert len(store.rollouts(ev.id)) <= ev.expected
    assert summary["rollouts"] == len(final)


@pytest.mark.model
def test_kill_during_weight_training_then_resume(tmp_path):
    """SIGKILL between training rounds: resume retrains the generation (a new attempt) and keeps every recorded rollout."""
    from agent_recordings import openai_reply, write

    small = {"rounds": 2, "examples": 2, "samples": 4, "steps": 1, "prompts_per_step": 2}
    recording = write(tmp_path / "rec.jsonl", [("feedback", openai_reply(
        f"DECISION: weights\nRATIONALE: scripted.\n```json\n{json.dumps({'algorithm': 'grpo', 'config': small})}\n```"))])
    run = tmp_path / "run"
    db = run / "sia.db"
    args = ["run", "sentiment", "--levers", "weights", "--feedback", "llm", "--feedback-model", "openai:gpt-4.1",
            "--meta-model", "template", "--replay", recording, "--budget", "15m", "--val-limit", "8", "--test-limit", "4",
            "--analysis-examples", "4", "--max-generations", "1", "--run-dir", run]
    rounds = run / "adapters" / ".rounds"
    snap = _kill_when(_start(*args), db, lambda: rounds.is_dir() and any(rounds.iterdir()), timeout=600)
    assert len(_query(db, "SELECT id FROM rollouts WHERE evaluation_id IN (SELECT id FROM evaluations WHERE config LIKE '%collect%')")) >= 8
    done = subprocess.run([SIA, "resume", str(run), "--json"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["status"] == "done" and [g["kind"] for g in summary["generations"]] == ["grpo"]
    final = _rollouts(db)
    assert all(final[rid] == created for rid, created in snap.items()), "a rollout recorded before the kill was lost or redone"
    with Store(run, write=False) as store:
        assert store.get_meta("gen:1:train_attempts") == 2
        assert (store.adapter_path("a1") / "adapter_config.json").is_file() and not rounds.exists()
        assert len(store.agent_calls("feedback")) == 1, "the recorded decision was acted on, not asked again"
