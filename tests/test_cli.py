"""The command line, run as a user runs it: real subprocesses, real model."""

import json
import subprocess

import pytest
from conftest import SIA


def sia(*args, timeout=300):
    return subprocess.run([SIA, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(r, *needles):
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    text = " ".join(lines)
    assert lines[0].startswith("error:"), r.stderr
    for needle in needles:
        assert needle in text, r.stderr


def test_missing_task_folder(tmp_path):
    assert_one_line_error(sia("eval", tmp_path / "missing"), "not found")


def test_malformed_task_toml(tmp_path):
    (tmp_path / "task.toml").write_text("name = 'x'\ndescription = \n")
    assert_one_line_error(sia("eval", tmp_path), "malformed TOML", "task.toml")


def test_harness_with_syntax_error(tmp_path, tiny_task):
    bad = tmp_path / "bad.py"
    bad.write_text("def solve(example, ctx)\n    return 'x'\n")
    assert_one_line_error(sia("eval", tiny_task, "--harness", bad, "--run-dir", tmp_path / "run"), "bad.py line 1", "syntax")


def test_unreachable_endpoint(tmp_path, tiny_task):
    r = sia("eval", tiny_task, "--endpoint", "http://127.0.0.1:9/v1", "--model", "m", "--run-dir", tmp_path / "run")
    assert_one_line_error(r, "cannot reach endpoint http://127.0.0.1:9/v1")


def test_unknown_split(tmp_path, tiny_task):
    assert_one_line_error(sia("eval", tiny_task, "--split", "dev", "--run-dir", tmp_path / "run"), "--split", "train", "test")


def test_tasks_lists_sizes():
    r = sia("tasks", "--json")
    assert r.returncode == 0, r.stderr
    rows = {x["name"]: x for x in json.loads(r.stdout)}
    assert rows["sentiment"]["sizes"] == {"train": 400, "val": 200, "test": 200}
    assert rows["lawbench-charges"]["sizes"]["val"] == 125


@pytest.mark.model
def test_eval_json_and_trace_show_token_ids_and_logprobs(tmp_path, tiny_task):
    run = tmp_path / "run"
    r = sia("eval", tiny_task, "--split", "val", "--limit", "4", "--json", "--run-dir", run)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["n"] == 4 and result["run_dir"] == str(run) and 0.0 <= result["score"] <= 1.0
    assert result["ci"][0] <= result["score"] <= result["ci"][1]
    assert "rollouts/s" in r.stderr  # the progress bar
    t = sia("trace", run, "--json", "--limit", "10")
    assert t.returncode == 0, t.stderr
    rollouts = json.loads(t.stdout)
    assert len(rollouts) == 4
    for ro in rollouts:
        kinds = [e["kind"] for e in ro["events"]]
        assert kinds[0] == "llm_call" and kinds[-1] == "grade"
        call = ro["events"][0]["data"]
        assert call["prompt_token_ids"] and call["completions"][0]["token_ids"] and call["completions"][0]["logprobs"]
    human = sia("trace", run, "--limit", "1")
    assert "llm_call" in human.stdout and "token_ids=" in human.stdout and "logprobs=" in human.stdout
