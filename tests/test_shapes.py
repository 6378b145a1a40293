"""Harness edits for answers of other shapes: an open answer read out of a sentence, and a vote of the nearest examples.

Both are measured on the task in front of them: the reading by replaying recorded replies, k by leave-one-out.
"""

from collections import Counter
from dataclasses import replace

from sia.agents.builtin_edits import edit_extraction
from sia.agents.contract import AgentState
from sia.agents.shape_edits import edit_neighbours
from sia.evaluation.analysis import Analysis, Reply
from sia.evaluation.executor import EvalConfig, execute
from sia.harness.template import make_config, render
from sia.store.memory import Memory
from sia.store.store import Store
from sia.task.loading import Example, Task, load_task
from sia.task.spec import TaskSpec


def _state(task, cfg, replies=(), train=None):
    analysis = Analysis(len(replies) or 40, 0.0, Counter({"wrong": len(replies) or 40}), Counter(), Counter(), Counter(), list(replies))
    return AgentState(task, render(cfg), analysis, Memory(), train if train is not None else task.split("train"), set(), 1,
                      ("harness",), 0, None, 0.3, 200)


def _open_task(tmp_path):
    spec = TaskSpec(name="base-forms", description="verbs", instruction="Give the base form.", score="binary",
                    input_field="word", grader={"entry": "sia.task.graders:text_match"})
    task = Task(tmp_path, spec)
    words = [("fretting", "fret"), ("blurring", "blur"), ("flubbed", "flub"), ("ran", "run"), ("sang", "sing"), ("went", "go")]
    task.__dict__["examples"] = {w: Example(w, "train", {"word": w}, {"answer": b}) for w, b in words}
    return task, words


def test_an_open_answer_reading_is_chosen_by_replaying_recorded_replies(tmp_path):
    task, words = _open_task(tmp_path)
    cfg = make_config(task.public_info())
    replies = [Reply(w, f'The base form of the verb "{w}" is "{b}".', "", {"answer": b}, 0.0, "stop") for w, b in words]
    (edit,) = edit_extraction(cfg, _state(task, cfg, replies))
    assert edit.harness.extract in ("quoted", "after_is") and "scores 1.000 against 0.000" in edit.rationale, edit.rationale
    ns: dict = {}
    exec(compile(render(edit.harness), "harness", "exec"), ns)
    assert ns["extract"]('The base form of "sang" is "sing".') == "sing"
    numbers = [Reply(w, f"Let me think. It is {i * 7}.", "", {"answer": str(i * 7)}, 0.0, "stop") for i, (w, _) in enumerate(words)]
    task.__dict__["examples"] = {w: Example(w, "train", {"word": w}, {"answer": str(i * 7)}) for i, (w, _) in enumerate(words)}
    (edit,) = edit_extraction(cfg, _state(task, cfg, numbers))
    assert edit.harness.extract in ("last_number", "after_is"), edit.harness.extract


def test_a_reading_that_does_not_beat_the_first_line_is_not_proposed(tmp_path):
    task, words = _open_task(tmp_path)
    cfg = make_config(task.public_info())
    replies = [Reply(w, b, "", {"answer": b}, 1.0, "stop") for w, b in words]
    assert edit_extraction(cfg, _state(task, cfg, replies)) == []


def test_a_neighbour_vote_answers_with_labels_and_chooses_k_on_its_own_pool(tmp_path, runtime):
    task = load_task("sentiment")
    cfg = make_config(task.public_info())
    train = task.split("train")[:40]
    (edit,) = edit_neighbours(cfg, _state(task, cfg, train=train))
    assert edit.harness.mode == "neighbours" and len(edit.harness.demos) == 40 and "leave-one-out" in edit.rationale
    assert {d.answer for d in edit.harness.demos} == {"positive", "negative"}
    assert edit_neighbours(edit.harness, _state(task, edit.harness, train=train)) == [], "offered once"
    with Store(tmp_path / "run") as store:
        result = execute(task, render(edit.harness), store=store, runtime=runtime, config=EvalConfig(split="val", limit=6))
        rows = store.rollouts(result.evaluation_id)
        logs = [e for r in rows for e in store.events(r.id) if e.kind == "log"]
    assert all(r.status == "ok" and r.output in ("positive", "negative") for r in rows), [(r.error_type, r.error) for r in rows]
    assert logs and all("neighbour vote" in e.data["message"] for e in logs)
    fixed = render(replace(edit.harness, neighbours=3))
    assert "CONFIG.get(\"neighbours\", 0)" in fixed and "'neighbours': 3" in fixed
