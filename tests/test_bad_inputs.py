"""Bad input gets one clear line and loses nothing: damaged stores, wrong settings, broken tasks, missing pieces."""

import json
import shutil
import sqlite3

import pytest
from conftest import new_run
from test_cli import assert_one_line_error, sia


@pytest.fixture
def finished_run(tmp_path):
    """A run directory as `sia run` leaves it, made without the model (no rollouts needed for these checks)."""
    from sia.loop.config import from_flat

    with new_run(tmp_path / "run", from_flat(task="sentiment")) as run:
        v = run.store.add_harness_version("def solve(example, ctx):\n    return 'positive'\n", "baseline")
        c = run.store.add_candidate(v, None, "baseline", "baseline")
        run.store.push_champion(c, "baseline", 0)
        run.store.set_meta("status", "done")
    return tmp_path / "run"


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_a_damaged_store_is_one_line_for_every_command_and_is_never_rewritten(finished_run, damage):
    db = finished_run / "sia.db"
    data = db.read_bytes()
    db.write_bytes({"empty": b"", "truncated": data[: len(data) // 3], "garbage": b"not a database at all" * 100}[damage])
    before = db.read_bytes()
    for args in (["status"], ["report"], ["trace"], ["resume"], ["rollback", "--to", "h0"]):
        r = sia(args[0], finished_run, *args[1:], timeout=120)
        assert_one_line_error(r, "sia.db")
        assert db.read_bytes() == before, f"`sia {args[0]}` changed the damaged store"


def test_rollback_of_a_missing_run_makes_nothing(tmp_path):
    assert_one_line_error(sia("rollback", tmp_path / "nope", "--to", "h0"), "not a sia run directory")
    assert not (tmp_path / "nope").exists()


@pytest.mark.parametrize("args,needle", [(["--levers", ""], "--levers: no lever named"), (["--tau", "-1"], "--tau"),
                                         (["--alpha", "7"], "--alpha"), (["--timeout", "-5"], "--timeout"),
                                         (["--replay", "/nonexistent/rec.jsonl", "--feedback", "llm", "--feedback-model", "openai:x"],
                                          "--replay /nonexistent/rec.jsonl: no such run directory"),
                                         (["--feedback", "llm", "--feedback-model", "openai:m@http://127.0.0.1:9/v1"],
                                          "cannot reach endpoint http://127.0.0.1:9/v1")])
def test_bad_run_settings_are_refused_before_anything_starts(tmp_path, args, needle):
    r = sia("run", "sentiment", *args, "--run-dir", tmp_path / "run", timeout=120)
    assert_one_line_error(r, needle)
    assert not (tmp_path / "run").exists(), "nothing is made before the settings are checked"


def test_sia_eval_refuses_a_negative_timeout(tmp_path, tiny_task):
    assert_one_line_error(sia("eval", tiny_task, "--timeout", "-5", "--run-dir", tmp_path / "run"), "--timeout", "greater than 0")


def _task_copy(tiny_task, tmp_path, **edits):
    dst = tmp_path / "task"
    shutil.copytree(tiny_task, dst)
    toml = (dst / "task.toml").read_text()
    for old, new in edits.items():
        toml = toml.replace(old, new)
    (dst / "task.toml").write_text(toml)
    return dst


def test_an_empty_split_an_unknown_grader_and_a_wrong_target_field_are_refused_up_front(tiny_task, tmp_path):
    empty = _task_copy(tiny_task, tmp_path / "a", **{"val = 4": "val = 0.0001"})
    assert_one_line_error(sia("eval", empty, "--run-dir", tmp_path / "r1"), "val split is empty")
    unknown = _task_copy(tiny_task, tmp_path / "b", **{"sia.task.graders:exact_label": "sia.task.graders:no_such_grader"})
    assert_one_line_error(sia("eval", unknown, "--run-dir", tmp_path / "r2"), "no function 'no_such_grader'")
    wrong = _task_copy(tiny_task, tmp_path / "c")
    labels = wrong / "labels.jsonl"
    labels.write_text("".join(json.dumps({"id": r["id"], "sentiment": r["label"]}) + "\n"
                              for r in map(json.loads, labels.read_text().splitlines())))
    r = sia("run", wrong, "--run-dir", tmp_path / "r3")
    assert_one_line_error(r, "reads the label field 'label', missing in 12 rows", "fields: sentiment")
    assert not any((tmp_path / n).exists() for n in ("r1", "r2", "r3"))


def test_rich_markup_in_a_message_is_printed_as_written(tmp_path):
    (tmp_path / "task.toml").write_text('name = "t"\ndescription = "d"\n[splits]\ntrain = -1\n[grader]\nentry = "x:y"\n')
    r = sia("eval", tmp_path)
    assert_one_line_error(r, "splits.train")


@pytest.mark.model
def test_status_of_a_killed_run_says_interrupted_and_resume_needs_its_harness_history(finished_run):
    with sqlite3.connect(finished_run / "sia.db") as con:
        con.execute("UPDATE meta SET value = ? WHERE key = 'status'", (json.dumps("running"),))
    r = sia("status", finished_run, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "interrupted"
    shutil.rmtree(finished_run / "harness")
    assert_one_line_error(sia("resume", finished_run, timeout=300), "harness repository", "is missing")


@pytest.mark.model
def test_the_budget_clock_is_saved_every_few_seconds(tmp_path):
    from sia.loop.budget import Budget
    from sia.loop.config import from_flat

    with new_run(tmp_path / "run", from_flat(task="sentiment")) as run:
        budget = Budget(run, 600, None, None, 10)
        budget._saved_at -= 6
        budget.tick()
        assert run.store.get_meta("elapsed_s") is not None
