"""Memory across runs and tasks: gated changes are recorded in SIA_HOME, and a new task's options are ranked with the
records of similar tasks, named in the rationale; --no-memory turns both off. No model is loaded."""

import json
from collections import Counter

from sia.agents.builtin import BuiltinFeedbackAgent
from sia.agents.contract import AgentState
from sia.evaluation.analysis import Analysis
from sia.harness.template import make_config, render
from sia.loop.config import RunConfig
from sia.store import priors
from sia.store.memory import Memory
from sia.task.loading import load_task

LABELS = priors.Features("label", 2, 80.0, 400, 0.5, 0.0, 0.0)


def _record(task, kind, delta, accepted, features=LABELS, minutes=2.0):
    return priors.Record(task, "harness", kind, accepted, delta, minutes, features)


def test_records_round_trip_and_a_torn_or_foreign_line_is_skipped(tmp_path):
    path = tmp_path / "outcomes.jsonl"
    priors.append(_record("a", "few_shot", 0.1, True), path)
    with open(path, "a") as f:
        f.write('{"task": "b", "kind": "score_la')  # a killed run's torn last line
        f.write("\nnot json at all\n")
    priors.append(_record("c", "score_labels", 0.2, True), path)
    got = priors.load(path)
    assert [r.task for r in got] == ["a", "c"] and got[1].features == LABELS
    assert [r.task for r in priors.load(path, exclude_task="a")] == ["c"]


def test_a_prior_comes_from_the_most_similar_tasks_records_of_that_kind():
    numbers = priors.Features("number", 0, 240.0, 500, 0.3, 0.6, 0.0)
    records = [_record("words", "score_labels", 0.30, True), _record("tweets", "score_labels", 0.20, True),
               _record("maths", "score_labels", -0.05, False, numbers), _record("words", "few_shot", -0.02, False)]
    p = priors.prior(records, "score_labels", LABELS)
    assert p.n == 2 and set(p.tasks) == {"words", "tweets"} and 0.2 <= p.delta <= 0.3, p
    assert "prior from 2 record(s) of score_labels" in p.describe()
    assert priors.prior(records, "score_labels", numbers).tasks[0] == "maths", "the nearest record leads"
    assert priors.prior(records, "neighbours", LABELS) is None
    assert LABELS.similarity(LABELS) == 1.0 and LABELS.similarity(numbers) < 0.3


def test_the_builtin_agent_ranks_with_the_prior_and_names_it():
    task = load_task("sentiment")
    cfg = make_config(task.public_info())
    analysis = Analysis(40, 0.5, Counter({"correct": 20, "wrong": 20}), Counter({"positive": 20, "negative": 20}),
                        Counter({"positive": 20, "negative": 20}), Counter())

    def decide(records):
        state = AgentState(task, render(cfg), analysis, Memory(), task.split("train"), set(), 1, ("harness",), 0, None, 0.3, 200,
                           priors=tuple(records), features=LABELS)
        return BuiltinFeedbackAgent().decide(state)

    plain = decide([])
    first = plain.proposal.kind
    assert "prior from" not in plain.proposal.rationale
    others = [k for k, *_ in plain.ranking if k != first]
    favoured = others[-1]
    records = [_record(f"task{i}", favoured, 0.4, True) for i in range(4)] + [_record(f"task{i}", first, -0.1, False) for i in range(4)]
    steered = decide(records)
    assert steered.proposal.kind == favoured, [r[:3] for r in steered.ranking]
    assert f"prior from 4 record(s) of {favoured}" in steered.proposal.rationale


def test_features_say_the_shape_size_and_failures_of_a_task():
    task = load_task("sentiment")
    analysis = Analysis(40, 0.5, Counter({"correct": 20, "wrong": 12, "unparseable": 8}), Counter(), Counter(), Counter())
    f = priors.features(task, analysis)
    assert f.output == "label" and f.labels == 2 and f.train == 400 and f.wrong == 0.3 and f.unparseable == 0.2
    assert 50 < f.input_chars < 200


def test_a_run_records_its_gated_changes_unless_told_not_to(scripted_run):
    records = priors.load()
    run_dir = str(scripted_run[0])
    mine = [r for r in records if r.run == run_dir]
    assert mine and {r.task for r in mine} == {"sentiment"} and "score_labels" in {r.kind for r in mine}
    assert all(r.features.output == "label" for r in mine)
    assert json.loads(json.dumps(RunConfig(task="sentiment").model_dump()))["memory"] is True
    assert RunConfig(task="sentiment", memory=False).memory is False


def test_a_finished_runs_gated_changes_are_added_to_a_memory_once(scripted_run, tmp_path):
    """`sia memory add`: the records a run with memory on leaves, read back from its store, so runs made with --no-memory
    (the zoo's) can inform later ones; a run already in the memory is not added twice."""
    from sia import api
    from sia.store.run import Run

    run_dir = scripted_run[0]
    live = [r for r in priors.load() if r.run == str(run_dir)]
    path = tmp_path / "memory" / "outcomes.jsonl"
    first = api.memory_add([run_dir], path)
    again = api.memory_add([run_dir], path)
    back = priors.load(path)
    assert first["runs"][str(run_dir)] == len(back) == len(live) > 0 and again["runs"][str(run_dir)] == "already in memory"
    same = lambda rs: sorted((r.task, r.lever, r.kind, r.accepted, round(r.delta, 6), r.features) for r in rs)  # noqa: E731
    assert same(back) == same(live), "what the run appended as it went"
    with Run.open(run_dir) as run:
        assert priors.records_of_run(run) == back
