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


def test_gold_sft_is_offered_for_open_answers_and_sized_to_the_whole_train_split(tmp_path):
    from sia.agents.shape_edits import gold_sft
    from sia.weights.config import plan

    task, words = _open_task(tmp_path)
    cfg = make_config(task.public_info())
    (option,) = gold_sft(cfg, _state(task, cfg), share=0.5)
    assert option.algorithm == "sft" and option.settings["examples"] == len(words) and option.settings["heldout"] > 0
    assert plan("sft", option.settings, "gold").train.heldout == option.settings["heldout"]
    labelled = load_task("sentiment")
    assert gold_sft(make_config(labelled.public_info()), _state(labelled, make_config(labelled.public_info())), 0.5) == []


def test_a_gold_sft_update_trains_on_gold_answers_until_its_held_out_loss_stops_improving(tmp_path, own_runtime):
    """sft on the gold answers of an open-answer task (sentiment's words, with no label set), on the harness's own prompts;
    a quarter held out, read after every step."""
    import json

    from conftest import ScriptedAgent, new_run

    from sia.agents.proposal import WeightUpdate
    from sia.loop.config import RunConfig
    from sia.loop.gate import GateConfig
    from sia.loop.loop import Loop
    from sia.task.loading import BUILTIN_DIR

    folder = tmp_path / "words"
    folder.mkdir()
    src = BUILTIN_DIR / "sentiment"
    inputs, labels = ((src / f).read_text().splitlines() for f in ("inputs.jsonl", "labels.jsonl"))
    keep = list(range(12)) + list(range(len(inputs) - 12, len(inputs)))
    (folder / "inputs.jsonl").write_text("".join(inputs[i] + "\n" for i in keep))
    rows = [json.loads(labels[i]) for i in keep]
    (folder / "labels.jsonl").write_text("".join(json.dumps({"id": r["id"], "answer": r["label"]}) + "\n" for r in rows))
    (folder / "task.toml").write_text('name = "words"\ndescription = "review sentiment as a word"\n'
                                      'instruction = "Is this review positive or negative? Answer with one word."\n'
                                      '[splits]\ntrain = 16\nval = 4\ntest = 4\n[grader]\nentry = "sia.task.graders:text_match"\n')
    settings = {"examples": 16, "samples": 1, "steps": 24, "prompts_per_step": 2, "heldout": 0.25, "lr": 1e-3}
    agent = ScriptedAgent([WeightUpdate("sft", settings, data="gold", rationale="scripted gold sft", kind="gold_sft")])
    config = RunConfig(task=str(folder), budget=600, val_limit=4, test_limit=4, analysis_examples=4, levers=["weights"],
                       gate=GateConfig.model_construct(tau=-1.0, alpha=1.01, alpha_scope="gate", futility_after=1.0))
    with new_run(tmp_path / "run", config) as run:
        summary = Loop(run, own_runtime, config, agent=agent).run()
        gen = summary["generations"][0]
        assert gen["accepted"], gen.get("reason")
        meta = json.loads((run.store.adapter_path("a1") / "sia_training.json").read_text())
    readings = [h["heldout_loss"] for h in meta["heldout"]]
    assert len(readings) >= 3 and all(r is not None for r in readings), meta["heldout"]
    assert "held-out loss" in meta["stopped_early"] and meta["groups_used"] >= 12
    assert min(readings) < readings[0], f"training did not lower the gold answers' loss on held-out prompts: {readings}"


def test_gold_answers_that_take_a_few_values_become_a_label_set_scored_by_likelihood(tmp_path):
    """A multiple-choice task that declares no labels (its grader reads a letter): the letters its train answers take are
    scored as the label set; an open task whose answers are many values gets no such edit."""
    from sia.agents.shape_edits import edit_answer_set

    spec = TaskSpec(name="mc", description="questions with lettered options", instruction="Answer with the letter.",
                    score="binary", input_field="question", grader={"entry": "sia.task.graders:multiple_choice"})
    task = Task(tmp_path, spec)
    task.__dict__["examples"] = {f"q{i}": Example(f"q{i}", "train", {"question": f"Q{i}?\n A. x\n B. y\n C. z\n D. w"},
                                                  {"answer": "ABCD"[i % 4]}) for i in range(16)}
    cfg = make_config(task.public_info())
    (edit,) = edit_answer_set(cfg, _state(task, cfg))
    assert edit.kind == "score_options" and edit.harness.labels == ("A", "B", "C", "D") and edit.harness.mode == "score"
    ns: dict = {}
    exec(compile(render(edit.harness), "harness", "exec"), ns)
    assert ns["CONFIG"]["labels"] == ["A", "B", "C", "D"] and ns["CONFIG"]["mode"] == "score"
    open_task, _ = _open_task(tmp_path)
    assert edit_answer_set(make_config(open_task.public_info()), _state(open_task, make_config(open_task.public_info()))) == []
