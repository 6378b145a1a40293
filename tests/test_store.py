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
