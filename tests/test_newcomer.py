"""A newcomer's own task, from the README alone: scaffold, check, evaluate; honest progress and honest failure."""

import json
import re
import subprocess

import pytest
from conftest import SIA
from test_cli import assert_one_line_error, sia

from sia.evaluation.executor import INFRA
from sia.task.graders import multiple_choice, numeric, regex_match, text_match
from sia.task.loading import Example


def _ex(**target):
    return Example("x", "val", {}, target)


def test_builtin_graders_for_numbers_free_text_patterns_and_choices():
    assert numeric(_ex(answer=42), "The answer is 42.").passed and not numeric(_ex(answer=42), "41").passed
    assert numeric(_ex(answer=3.14), "about 3.1", rel_tol=0.02).passed and numeric(_ex(answer=1000), "1,000").passed
    assert numeric(_ex(answer=7), "seven").outcome == "unparseable"
    assert text_match(_ex(answer="São Paulo"), "sao paulo.").passed and text_match(_ex(answers=["NYC", "New York"]), "new  york").passed
    assert not text_match(_ex(answer="Paris"), "Paris, France").passed
    assert regex_match(_ex(answer="blue"), "Let me think. Answer: Blue").passed
    assert regex_match(_ex(answer="4"), "x = 4", pattern=r"x = (\d+)").passed
    assert multiple_choice(_ex(answer="B"), "(B) because").passed and not multiple_choice(_ex(answer="B"), "A. no").passed


@pytest.mark.model
def test_a_new_task_is_scaffolded_checked_and_evaluated_without_reading_any_source(tmp_path):
    folder = tmp_path / "word-count"
    r = sia("task", "new", folder)
    assert r.returncode == 0 and (folder / "task.toml").is_file(), r.stderr
    reviews = [json.loads(line) for line in open("src/sia/plugins/tasks/sentiment/inputs.jsonl")][:16]
    with open(folder / "inputs.jsonl", "w") as fi, open(folder / "labels.jsonl", "w") as fl:
        for row in reviews:  # a counting task whose answer is a number
            fi.write(json.dumps({"id": row["id"], "question": "How many words are in this text? " + row["text"]}) + "\n")
            fl.write(json.dumps({"id": row["id"], "answer": len(row["text"].split())}) + "\n")
    r = sia("task", "check", folder)
    assert r.returncode == 0 and "dry grading: each gold output scores full marks (16 examples)" in r.stdout, r.stdout
    r = sia("eval", folder, "--limit", "2", "--json", "--run-dir", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["n"] == 2 and 0.0 <= result["score"] <= 1.0
    # a wrong field name in the labels is found by the check, and by sia eval before anything runs
    (folder / "labels.jsonl").write_text((folder / "labels.jsonl").read_text().replace('"answer"', '"count"'))
    r = sia("task", "check", folder)
    assert r.returncode == 2 and "'answer' missing in 16 rows" in r.stdout, r.stdout
    assert_one_line_error(sia("eval", folder, "--run-dir", tmp_path / "run2"), "label row has fields: count")


@pytest.mark.model
def test_a_run_where_every_rollout_times_out_stops_with_one_message_and_no_lessons(tmp_path):
    run = tmp_path / "run"
    r = subprocess.run([SIA, "run", "sentiment", "--timeout", "0.3", "--val-limit", "8", "--test-limit", "4", "--run-dir", run],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])  # not 134: no native abort at exit
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "rollouts failed for infrastructure reasons" in errors[0] and "raise --timeout" in errors[0]
    assert "Traceback" not in r.stderr
    s = json.loads(subprocess.run([SIA, "status", run, "--json"], capture_output=True, text=True, timeout=60).stdout)
    assert s["generations"] == [] and s["status"] in ("stopped", "interrupted"), "no generation ran, so no lesson was written"
    assert set(INFRA) >= {"timeout"}


def test_a_harness_that_spins_in_its_own_code_is_scored_not_taken_for_a_slow_machine(tmp_path, runtime, tiny_task):
    """A timeout counts as the machine's when the rollout was starting or waiting for the policy; a harness that runs
    out the clock in its own code, after it began and before asking, is the harness's failure and is scored 0."""
    from sia.evaluation.executor import EvalConfig, execute
    from sia.harness.sandbox import SandboxLimits
    from sia.store.store import Store
    from sia.task.loading import load_task

    config = EvalConfig(split="val", limit=4, concurrency=2, limits=SandboxLimits(timeout_s=1.5))
    with Store(tmp_path / "run") as store:
        result = execute(load_task(tiny_task), "def solve(example, ctx):\n    while True:\n        pass\n", store=store,
                         runtime=runtime, config=config)
        rows = store.rollouts(result.evaluation_id)
    assert len(rows) == 4 and {r.error_type for r in rows} == {"timeout"} and result.score == 0.0


@pytest.mark.model
def test_a_run_whose_baseline_does_not_fit_is_limited_ends_in_budget_and_logs_progress_without_a_terminal(tmp_path):
    r = subprocess.run([SIA, "run", "sentiment", "--budget", "45s", "--levers", "harness", "--analysis-examples", "8",
                        "--run-dir", tmp_path / "run", "--json"], capture_output=True, text=True, timeout=600,
                       env={**__import__("os").environ, "CI": "true"})
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)
    limits = summary["limits"]
    assert limits["val"] < 200 and limits["test"] < 200 and "limited to the first" in limits["note"]
    assert "limited to the first" in r.stderr, "the run says what it limited"
    assert summary["final"]["test_detail"]["n"] == limits["test"] and summary["final"]["test"] is not None
    assert summary["elapsed_s"] <= 45 * 1.1 + 60, f"{summary['elapsed_s']}s for a 45 s budget (margin: 10% + one minute)"
    stamps = [int(m) * 60 + int(s) for m, s in re.findall(r"^\[sia (\d+)m(\d\d)s", r.stderr, re.M)]
    assert len(stamps) >= 4 and max(b - a for a, b in zip([0] + stamps, stamps)) <= 30, stamps


def test_without_a_terminal_a_line_is_printed_even_while_nothing_finishes():
    import io
    import time

    from sia.cli.live import PlainView

    stream = io.StringIO()
    with PlainView(stream, budget_s=60, every_s=0.5) as view:
        view.on_phase("generation 1: training a1")
        time.sleep(1.8)  # a long training step: no event, but the log must not go quiet
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 3 and all(line.startswith("[sia ") for line in lines), lines
    assert "working: generation 1" in lines[-1]


def test_the_heartbeat_names_the_training_step_once_a_weight_updates_collection_is_done():
    import io
    import time
    from types import SimpleNamespace

    from sia.cli.live import PlainView

    stream = io.StringIO()
    with PlainView(stream, budget_s=60, every_s=0.4) as view:
        view.on_phase("generation 1: training a1 by ce")
        view.on_train_start(16)
        view.on_eval_start("collect round 1/1", "")
        view.on_eval_total(2, 0)
        for _ in range(2):
            view.on_rollout(SimpleNamespace(score=1.0, error_type=None))
        view.on_train_step({"reward_mean": 0.5, "loss": 1.0})
        time.sleep(1.0)  # the second step runs: no event
        view.on_phase("generation 1: gate on validation")
        time.sleep(1.0)
    lines = stream.getvalue().splitlines()
    during = [x for x in lines if "working: training step 2/16" in x]
    assert during, lines
    assert "collect round" not in " ".join(x for x in lines if "working:" in x), lines
    assert "working: generation 1" in lines[-1], "a new phase ends the update's heartbeat"


def test_a_gate_in_chunks_counts_up_to_its_whole_evaluation():
    import io
    from types import SimpleNamespace

    from sia.cli.live import PlainView

    stream = io.StringIO()
    view = PlainView(stream, budget_s=60, every_s=60)
    view.on_eval_start("gate gen 2", "")
    view.on_eval_total(4, 1)  # a resumed evaluation: one rollout was scored before
    view.on_rollout(SimpleNamespace(score=1.0, error_type=None))
    for _ in range(2):  # the gate's next chunks start where the last one stopped
        view.on_eval_start("gate gen 2", "")
        view.on_eval_total(4, view.before + view.done)
        view.on_rollout(SimpleNamespace(score=0.0, error_type="timeout"))
    lines = stream.getvalue().splitlines()
    assert "gate gen 2: 4/4 done" in lines[-1] and "1 timeouts" not in lines[-1] and "2 timeouts" in lines[-1], lines
    assert "score so far 0.333" in lines[-1], "the running score covers the rollouts this view saw"
    view.on_eval_start("new champion val", "")
    view.on_eval_total(10, 4)
    assert view.before == 4 and view.done == 0, "another evaluation starts its own count"


def test_without_timeout_the_rollout_limit_is_fitted_to_what_the_probe_measured(tmp_path, runtime, tiny_task):
    from conftest import ScriptedAgent, new_run

    from sia.evaluation.executor import InfraFailure
    from sia.loop.config import RunConfig
    from sia.loop.loop import Loop

    (tiny_task / "slow.py").write_text(
        "import time\ndef solve(example, ctx):\n    ctx.llm.complete('Hi', max_tokens=1)\n    time.sleep(1.0)\n    return 'positive'\n"
    )
    (tiny_task / "task.toml").write_text((tiny_task / "task.toml").read_text() + '\n[harness]\ndefault = "slow.py"\ntimeout_s = 0.6\n')
    config = RunConfig(task=str(tiny_task), budget=300, levers=["harness"])  # a rollout takes about 1 s, over the task's 0.6 s
    with new_run(tmp_path / "fitted", config) as run:
        summary = Loop(run, runtime, config, agent=ScriptedAgent([])).run()
        assert not [r for r in run.store.rollouts() if r.error_type == "timeout"]
    assert 0.6 < summary["limits"]["timeout"] <= 4 * 0.6, summary["limits"]
    assert "rather than the task's timeout_s 0.6s" in summary["limits"]["note"]
    assert summary["final"]["test_detail"]["n"] == 4
    config = RunConfig(task=str(tiny_task), budget=300, levers=["harness"], timeout=0.6)  # --timeout is kept as given
    with new_run(tmp_path / "strict", config) as run, pytest.raises(InfraFailure, match="the 0.6s per rollout"):
        Loop(run, runtime, config, agent=ScriptedAgent([])).run()


def test_a_prompt_longer_than_the_context_is_the_harness_error_not_an_infrastructure_failure(tmp_path, runtime, tiny_task):
    from conftest import ScriptedAgent, new_run

    from sia.loop.config import RunConfig
    from sia.loop.loop import Loop

    (tiny_task / "long.py").write_text("def solve(example, ctx):\n    return ctx.llm.complete('word ' * 9000, max_tokens=2).text\n")
    (tiny_task / "task.toml").write_text((tiny_task / "task.toml").read_text() + '\n[harness]\ndefault = "long.py"\n')
    config = RunConfig(task=str(tiny_task), budget=300, levers=["harness"])
    with new_run(tmp_path / "run", config) as run:
        summary = Loop(run, runtime, config, agent=ScriptedAgent([])).run()  # scored 0, not stopped as the machine's fault
        rows = run.store.rollouts()
    assert rows and {r.error_type for r in rows} == {"policy_request"} and "the context holds" in rows[0].error
    assert summary["final"]["test"] == 0.0
