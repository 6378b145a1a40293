"""The builtin Feedback-Agent prices each change: harness edits by what they make the policy read, weight updates by
their plan at this machine's speed, sized to the budget left."""

import pytest
from test_lever_choice import _analysis, _state

from sia.agents.builtin import BuiltinFeedbackAgent
from sia.agents.proposal import WeightUpdate
from sia.harness.template import make_config, render
from sia.store.memory import Entry, Memory
from sia.task.loading import load_task
from sia.weights.config import LABEL_PRESET


def test_a_harness_edit_costs_what_its_harness_makes_the_policy_read_per_example():
    from dataclasses import replace as dc_replace

    from sia.agents.builtin_edits import edit_domain_calibration, edit_few_shot, edit_similar_demos
    from sia.agents.costs import harness_cost, reading
    from sia.task.loading import Example

    task = load_task("sentiment")
    score = make_config(task.public_info(), mode="score", calibrate=True)
    state = _state(task, render(score), _analysis())
    (similar,) = edit_similar_demos(score, state)
    (dc,) = edit_domain_calibration(score, state)
    inline, _ = edit_few_shot(score, state)
    flat = harness_cost(state)
    assert harness_cost(state, score, dc.harness) == pytest.approx(flat), "content-free prompts are computed once"
    assert harness_cost(state, score, inline.harness) == pytest.approx(flat), "fixed demonstrations are a prefix read once"
    assert harness_cost(state, score, similar.harness) > 2.5 * flat, "4 demonstrations chosen per input are read per input"
    ensemble = dc_replace(score, ensemble=("Rate it.", "Positive or negative?"))
    assert reading(ensemble, state) == pytest.approx(3 * reading(score, state))
    long = dc_replace(state, train=[Example(f"l{i}", "train", {"text": "word " * 600}, {"label": "positive"}) for i in range(10)])
    assert harness_cost(long, score, dc_replace(score, max_input_chars=1500)) < 0.6 * harness_cost(long), "clipping saves"
    generate = make_config(task.public_info())
    assert harness_cost(state, generate, score) == pytest.approx(flat), "a switch to scoring is priced as measured"


def test_a_ce_update_costs_more_where_prompts_and_label_sets_are_longer():
    from types import SimpleNamespace

    from sia.agents.costs import CE_GROUP_S, ce_group_seconds

    short, long = (load_task(n) for n in ("sentiment", "lawbench-topics"))
    assert ce_group_seconds(SimpleNamespace(task=short, train=short.split("train"))) == pytest.approx(CE_GROUP_S, rel=0.1)
    assert ce_group_seconds(SimpleNamespace(task=long, train=long.split("train"))) > 3 * CE_GROUP_S, "20 labels after long prompts"


def test_a_ce_update_on_a_calibrating_champion_is_priced_with_the_content_free_inputs_its_steps_score():
    from dataclasses import replace

    from sia.agents.costs import ce_group_seconds, content_free_inputs, weights_cost
    from sia.weights.config import plan

    task = load_task("sentiment")
    plain = make_config(task.public_info(), mode="score")
    calibrated = replace(plain, calibrate=True, calibrate_inputs=tuple(f"words {i}" for i in range(8)))
    s = replace(_state(task, render(plain), _analysis()), rollout_s=0.3, val_n=200, seconds_left=900)
    c = replace(s, champion_source=render(calibrated))
    assert content_free_inputs(s, 4) == 0 and content_free_inputs(c, 4) == 4 and content_free_inputs(c, 0) == 8
    wp = plan("ce", dict(LABEL_PRESET))
    extra = wp.most_steps() * 4 * ce_group_seconds(s) * s.train_slowdown / 60
    assert weights_cost(wp, c) == pytest.approx(weights_cost(wp, s) + extra)
    assert weights_cost(wp, c, distill=True) == weights_cost(wp, s, distill=True), "the student harness calibrates nothing"


def test_a_weight_update_is_priced_by_how_much_longer_this_runs_past_updates_took_than_their_own_plans_priced():
    from dataclasses import replace

    from sia.agents.builtin import smallest
    from sia.agents.costs import weights_cost
    from sia.weights.config import plan

    task = load_task("sentiment")
    s = replace(_state(task, render(make_config(task.public_info(), mode="score")), _analysis()), rollout_s=0.4, val_n=200,
                seconds_left=300)
    full, least = plan("ce", dict(LABEL_PRESET)), plan("ce", smallest(dict(LABEL_PRESET), "ce"))
    took = 1.2 * weights_cost(full, s) * 60
    tried = {"algorithm": "ce", "config": dict(LABEL_PRESET), "data": "train"}
    measured = replace(s, memory=Memory([Entry(1, "weights", "ce", True, 0.38, 0.0004, 300, took, "", None, tried),
                                         Entry(2, "weights", "ce", False, 0.0, 1.0, 0, 5.0, "", "a1", tried)]))
    assert weights_cost(full, measured) == pytest.approx(took / 60), "the update measured: its measured minutes"
    assert weights_cost(least, measured) == pytest.approx(1.2 * weights_cost(least, s)), \
        "a smaller update: its own price, 20% over as measured (a try that ended in 5 s lowers nothing)"
    assert weights_cost(least, measured) < took / 60
    legacy = replace(s, memory=Memory([Entry(1, "weights", "ce", True, 0.38, 0.0004, 300, took, "", None)]))
    assert weights_cost(least, legacy) == pytest.approx(took / 60), "no plan on record: compared with the update priced"


def test_a_weight_update_gets_most_of_the_budget_when_no_harness_edit_waits_for_it():
    from dataclasses import replace

    from sia.agents.builtin import ce_settings, fit_to_budget
    from sia.agents.costs import weights_cost
    from sia.weights.config import plan

    task = load_task("lawbench-topics")
    both = replace(_state(task, render(make_config(task.public_info())), _analysis()), rollout_s=0.65, val_n=109, seconds_left=1200)
    alone = replace(both, levers=("weights",))
    shared, own = fit_to_budget(ce_settings(both), both, "ce"), fit_to_budget(ce_settings(alone), alone, "ce")
    assert ce_settings(both)["examples"] == len(task.split("train")), "the whole train split, before it is fitted"
    assert weights_cost(plan("ce", shared), both) * 60 <= 0.5 * 1200 < weights_cost(plan("ce", own), alone) * 60 <= 0.9 * 1200
    assert (own["epochs"], own["examples"]) > (shared["epochs"], shared["examples"]), "the update alone is the bigger one"


def test_no_ce_update_is_proposed_when_the_budget_holds_only_one_too_small_to_pass_the_gate():
    from dataclasses import replace

    from sia.agents.builtin import CE_MIN_STEPS, ce_settings, fit_to_budget, smallest, weight_candidates
    from sia.weights.config import plan

    task = load_task("lawbench-topics")
    cfg = make_config(task.public_info(), mode="score")
    roomy = replace(_state(task, render(cfg), _analysis()), rollout_s=0.65, val_n=109, seconds_left=900)
    full = ce_settings(roomy)
    least = plan("ce", smallest(full, "ce"))
    assert least.most_steps() == CE_MIN_STEPS and least.train.epochs == 1, "the smallest one still proposed"
    assert plan("ce", {**smallest(full, "ce"), "examples": least.examples - 1}).most_steps() < CE_MIN_STEPS, \
        "the fewest examples that give those steps"
    tight = replace(roomy, seconds_left=400)  # half of it holds 2 steps on LawBench's 20 topics
    wp = plan("ce", fit_to_budget(full, roomy, "ce"))
    assert wp.most_steps() >= CE_MIN_STEPS
    assert [o.kind for o in weight_candidates(cfg, roomy)] == ["ce"]
    assert fit_to_budget(full, tight, "ce") is None
    # half the budget is what an update is sized to, not what it must fit: its smallest version within 90% is proposed
    from sia.agents.costs import weights_cost

    need = weights_cost(least, roomy) * 60
    just = replace(roomy, seconds_left=need / 0.9 + 1)
    assert fit_to_budget(full, just, "ce") == smallest(full, "ce") and need > 0.5 * just.seconds_left
    assert fit_to_budget(full, replace(roomy, seconds_left=need / 0.9 - 1), "ce") is None
    assert weight_candidates(cfg, tight) == []
    said = BuiltinFeedbackAgent().decide(replace(tight, seconds_left=need / 0.9 - 1))
    assert "no ce update: the smallest worth a gate" in said.proposal.rationale, "a run that never trains says why"
    decision = BuiltinFeedbackAgent().decide(replace(tight, levers=("weights",), seconds_left=200))
    assert not isinstance(decision.proposal, WeightUpdate), "nothing worth its gate is left"


def test_training_is_priced_at_this_machines_speed_and_a_slow_machine_gets_a_smaller_update(monkeypatch):
    from dataclasses import replace

    import sia.agents.costs as costs
    from sia.agents.builtin import CE_MIN_STEPS, ce_settings, fit_to_budget
    from sia.agents.costs import ce_group_seconds, gate_seconds, machine_slowdown, weights_cost
    from sia.weights.config import plan

    first = machine_slowdown()
    assert 0.1 <= first <= 20 and machine_slowdown() == first, "a probe is reused while it is fresh"
    monkeypatch.setattr(costs, "_probe", (costs._probe[0] - costs.PROBE_TTL_S, -1.0))
    assert 0.1 <= machine_slowdown() <= 20, "an old probe is measured again (a machine's speed moves between sittings)"
    task = load_task("sentiment")
    fast = replace(_state(task, render(make_config(task.public_info(), mode="score")), _analysis()), rollout_s=0.4, val_n=200,
                   seconds_left=900)
    slow = replace(fast, train_slowdown=8.0)
    wp = plan("ce", dict(LABEL_PRESET))
    slower = replace(fast, train_slowdown=15.0)
    per_unit = (weights_cost(wp, slow) - weights_cost(wp, fast)) * 60 / 7
    assert (weights_cost(wp, slower) - weights_cost(wp, slow)) * 60 == pytest.approx(7 * per_unit) and per_unit > 0
    assert weights_cost(wp, fast) * 60 - per_unit == pytest.approx(wp.examples * fast.rollout_s + gate_seconds(fast)), \
        "only training is scaled: collection and the gate are measured rollout rates already"
    assert per_unit >= wp.most_steps() * wp.train.prompts_per_step * ce_group_seconds(fast), "steps and held-out reads"
    sized = [plan("ce", fit_to_budget(ce_settings(s), s, "ce")) for s in (fast, slow)]
    assert sized[0].examples == len(task.split("train")), "the whole train split where it fits"
    assert (sized[0].train.epochs, sized[0].examples) > (sized[1].train.epochs, sized[1].examples), "a slow machine: a smaller one"
    assert sized[1].most_steps() >= CE_MIN_STEPS
