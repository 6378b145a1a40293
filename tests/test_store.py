import sqlite3
import subprocess

import pytest

from sia.errors import StoreError
from sia.store.records import NewRollout
from sia.store.store import Store


def _record(i: int) -> NewRollout:
    return NewRollout(f"e0:x{i}:0", "e0", "c0", f"x{i}", "val", 0, 1, "ok", None, None, "positive", 1.0, True, "ok", 0.1,
                         [{"kind": "llm_call", "t": 1.0, "data": {"prompt_token_ids": [1, 2]}},
                          {"kind": "grade", "t": 2.0, "data": {"score": 1.0}}])


def test_store_is_wal_and_writes_rollouts_with_events(tmp_path):
    with Store(tmp_path / "run") as store:
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        eid = store.add_evaluation("c0", "val", 0, 1, 2, {})
        assert eid == "e0"
        store.add_rollout(_record(0))
        with pytest.raises(sqlite3.IntegrityError):
            store.add_rollout(_record(0))  # a rollout is recorded once
    with Store(tmp_path / "run", write=False) as ro:
        assert ro.count_rollouts() == 1
        assert [e.kind for e in ro.events("e0:x0:0")] == ["llm_call", "grade"]


def test_second_writer_is_refused(tmp_path):
    first = Store(tmp_path / "run")
    try:
        with pytest.raises(StoreError, match="in use"):
            Store(tmp_path / "run")
    finally:
        first.close()
    Store(tmp_path / "run").close()  # free again once the first closed


def test_harness_versions_are_git_commits_with_rationale(tmp_path):
    with Store(tmp_path / "run") as store:
        v0 = store.add_harness_version("def solve(e, ctx):\n    return 'a'\n", "baseline")
        v1 = store.add_harness_version("def solve(e, ctx):\n    return 'b'\n", "answer b instead", parent=v0)
        assert (v0, v1) == ("h0", "h1")
        assert store.add_harness_version("def solve(e, ctx):\n    return 'a'\n", "again") == "h0"
        assert "return 'b'" in store.harness_source("h1")
        log = subprocess.run(["git", "log", "--format=%s"], cwd=store.harness_repo, capture_output=True, text=True).stdout
        assert "h1: answer b instead" in log and "h0: baseline" in log


def test_reading_a_missing_run_dir_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="not a sia run directory"):
        Store(tmp_path / "nothing", write=False)


def test_a_run_whose_builtin_task_folder_moved_still_opens(tmp_path):
    """A run records its task's folder; when sia is reinstalled or the run was made from another checkout, a builtin
    task is found again by name, and any other missing folder is a clear error."""
    from sia.errors import TaskError
    from sia.store.run import _recorded_task

    assert _recorded_task({"name": "sentiment", "folder": str(tmp_path / "gone" / "sentiment")}).name == "sentiment"
    with pytest.raises(TaskError, match="not found"):
        _recorded_task({"name": "my-task", "folder": str(tmp_path / "gone" / "my-task")})


def test_the_test_reserve_counts_only_work_the_policy_service_computed(tmp_path):
    """A champion whose validation the policy service answered from its memo of the parent's scorings (a calibration
    edit keeps each example's prompts) ran fast on validation only: the final test's inputs are new, so the time kept
    for the test comes from the parent's computed pass, not from the memo-fed one."""
    from conftest import new_run

    from sia.loop.budget import Budget
    from sia.loop.config import from_flat

    def evaluate(store, cid, seconds, computed):
        eid = store.evaluation_for(cid, "val", lambda: store.add_evaluation(cid, "val", 0, 1, 10, {"purpose": "val"}))
        for i in range(10):
            call = {"kind": "llm_call", "t": 1.0, "data": {"kind": "score", "computed": computed}}
            store.add_rollout(NewRollout(f"{eid}:x{i}:0", eid, cid, f"x{i}", "val", 0, 1, "ok", None, None, "a", 1.0, True,
                                         None, seconds, [call]))

    with new_run(tmp_path / "run", from_flat(task="sentiment")) as run:
        store = run.store
        parent = store.add_candidate(store.add_harness_version("def solve(e, ctx):\n    return 'a'\n", "baseline"), None, "harness", "")
        evaluate(store, parent, 10.0, True)  # ~1 rollout/s, computed
        store.push_champion(parent, "baseline")
        child = store.add_candidate(store.add_harness_version("def solve(e, ctx):\n    return 'b'\n", "recalibrated"), None,
                                    "harness", "", parent=parent)
        evaluate(store, child, 0.2, False)  # ~50 rollouts/s, every call served from the memo
        store.push_champion(child, "accepted")
        assert store.served_from_memo(store.evaluation_id(child, "val")) == 10
        budget = Budget(run, 600, None, None, 10)
        assert budget.rate(child) > 20, "the gate's own pace stays the measured one"
        assert 1.2 * 10 / 1.1 + 5 < budget.test_reserve(child) < 1.2 * 10 / 0.9 + 5, budget.test_reserve(child)
        assert budget.test_reserve(parent) == pytest.approx(1.2 * 10 / (10 / 10.0) + 5, rel=0.1)
