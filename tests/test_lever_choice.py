"""The builtin Feedback-Agent chooses between harness and weights from the evidence, and logs why."""

import re
from collections import Counter

import pytest

from sia.agents.builtin import BuiltinFeedbackAgent
from sia.agents.contract import AgentState
from sia.agents.proposal import HarnessEdit, WeightUpdate
from sia.evaluation.analysis import Analysis
from sia.harness.template import make_config, render
from sia.store.memory import Entry, Memory
from sia.task.loading import load_task
from sia.weights.config import LABEL_PRESET


def _analysis(n=40, correct=20, wrong=20, unparseable=0, predicted=None):
    outcomes = Counter({"correct": correct, "wrong": wrong, "unparseable": unparseable})
    return Analysis(n, correct / n, outcomes, Counter(predicted or {"positive": 20, "negative": 20}),
                    Counter({"positive": 20, "negative": 20}), Counter())


def _state(task, source, analysis, memory=None, levers=("harness", "weights"), adapter=None, tried=()):
    return AgentState(task, source, analysis, memory or Memory(), task.split("train"), set(tried), 1, levers, 0, adapter, 0.3, 200)


def test_malformed_answers_point_at_the_harness_and_wrong_ones_at_the_weights():
    task = load_task("sentiment")
    gen_src = render(make_config(task.public_info()))
    agent = BuiltinFeedbackAgent()
    decision = agent.decide(_state(task, gen_src, _analysis(correct=16, wrong=4, unparseable=20)))
    malformed, ranking = decision.proposal, decision.ranking
    assert isinstance(malformed, HarnessEdit)
    weights_ranked = [r for r in ranking if r[0] in ("grpo", "sft", "ce")]
    best_edit = max(r[1] for r in ranking if r[0] not in ("grpo", "sft", "ce"))
    assert all(r[1] < 0.5 * best_edit for r in weights_ranked), "malformed output points at the harness first"
    # with the weights alone, ce still answers malformed replies: it trains the gold label's own tokens
    alone = agent.decide(_state(task, gen_src, _analysis(correct=1, wrong=1, unparseable=38), levers=("weights",))).proposal
    assert isinstance(alone, WeightUpdate) and alone.algorithm == "ce" and "named no label" in alone.rationale
    # well-formed but wrong, with the harness edits already tried on this adapter: the weights
    score_src = render(make_config(task.public_info(), mode="score", calibrate=True))
    choice = agent.decide(_state(task, score_src, _analysis(correct=24, wrong=16), levers=("weights",))).proposal
    assert isinstance(choice, WeightUpdate) and choice.lever == "weights"
    assert "well-formed but wrong" in choice.rationale and "per minute" in choice.rationale


def test_the_algorithm_follows_the_reward_shape():
    """On a closed label set the gold label is trained against the others first (ce); once that is rejected on the champion's
    adapter, the policy-gradient alternative follows the reward's shape."""
    task = load_task("sentiment")
    agent = BuiltinFeedbackAgent()
    score_src = render(make_config(task.public_info(), mode="score"))
    gen_src = render(make_config(task.public_info()))
    for src in (score_src, gen_src):
        first = agent.decide(_state(task, src, _analysis(), levers=("weights",))).proposal
        assert first.algorithm == "ce" and first.config["samples"] == 1 and "closed label set" in first.rationale
    ce_rejected = Memory([Entry(1, "weights", "ce", False, -0.01, 0.5, 100, 150.0, "", None)])
    scored = agent.decide(_state(task, score_src, _analysis(), ce_rejected, levers=("weights",))).proposal
    assert scored.algorithm == "grpo" and scored.config["samples"] == 1, "a scoring harness's group is its label set"
    balanced = agent.decide(_state(task, gen_src, _analysis(correct=20, wrong=20), ce_rejected, levers=("weights",))).proposal
    assert balanced.algorithm == "grpo" and balanced.config["samples"] == 8
    rare = agent.decide(_state(task, gen_src, _analysis(correct=1, wrong=39), ce_rejected, levers=("weights",))).proposal
    assert rare.algorithm == "sft" and "few groups with reward spread" in rare.rationale


def test_measured_gains_per_minute_steer_the_choice_and_harness_edits_are_rechecked_on_a_new_adapter():
    task = load_task("sentiment")
    agent = BuiltinFeedbackAgent()
    gen_src = render(make_config(task.public_info()))
    evidence = _analysis(correct=20, wrong=20, predicted={"positive": 40})
    first = agent.decide(_state(task, gen_src, evidence)).proposal
    assert isinstance(first, HarnessEdit) and first.kind == "score_labels"
    # the harness lever has been rejected three times in a row, each slowly; the weights gained before, cheaply
    mem = Memory([Entry(1, "weights", "grpo", True, 0.10, 0.01, 300, 120.0, "", None)]
                 + [Entry(i, "harness", k, False, -0.02, 0.5, 100, 200.0, "", "a1")
                    for i, k in ((2, "score_labels"), (3, "few_shot"), (4, "instruction"))])
    decision = agent.decide(_state(task, gen_src, evidence, memory=mem, adapter="a1"))
    later = decision.proposal
    assert isinstance(later, WeightUpdate), decision.ranking[:3]
    assert "continuing from adapter a1" in later.rationale
    # a harness edit rejected on adapter a1 is proposed again, undiscounted, once a2 is the champion's adapter
    again = agent.decide(_state(task, gen_src, evidence, memory=Memory(mem.entries[1:]), adapter="a2", levers=("harness",))).proposal
    assert isinstance(again, HarnessEdit) and again.kind == "score_labels"


def test_when_unparseable_replies_dominate_likelihood_scoring_ranks_first():
    """The edit that makes an unparseable answer impossible is tried before those that make one less likely."""
    from sia.evaluation.analysis import Reply

    task = load_task("sentiment")
    gen_src = render(make_config(task.public_info()))
    a = _analysis(n=40, correct=10, wrong=5, unparseable=25, predicted={"<none>": 25, "positive": 15})
    a.replies.extend(Reply(f"x{i}", "The review talks about the film and its", "The review talks about", {"label": "positive"},
                           0.0, "length") for i in range(25))
    a.replies.extend(Reply(f"y{i}", "positive", "positive", {"label": "positive"}, 1.0, "stop") for i in range(15))
    decision = BuiltinFeedbackAgent().decide(_state(task, gen_src, a, levers=("harness",)))
    assert isinstance(decision.proposal, HarnessEdit) and decision.proposal.kind == "score_labels", decision.ranking[:4]
    kinds = [r[0] for r in decision.ranking]
    assert "retry" in kinds and "reply_length" in kinds, "the weaker edits were weighed too"


def test_the_plan_keeps_the_budget_for_the_more_relevant_lever_when_it_cannot_hold_both():
    """Harness first while the budget holds the weight update too; once it holds only one, the more relevant one runs.
    The switch comes from this rule and the measured costs, not from a written order."""
    from sia.agents.builtin import Ranked, plan_next
    from sia.agents.builtin_edits import Option

    edit = Ranked(0.4, 0.4, 1.0, 0.5, Option("few_shot", "demos", 0.4), "src")
    weights = Ranked(0.2, 0.6, 3.0, 0.5, Option("ce", "labels", 0.6, algorithm="ce"), None)
    first, why = plan_next([edit, weights], seconds_left=10 * 60)
    assert first is edit and "leaving room for ce" in why
    then, why = plan_next([edit, weights], seconds_left=3.5 * 60)
    assert then is weights and "not both" in why
    # the edit and the update add up to 4 of 4.2 minutes, but an update may take only 90% of what the edit leaves (2.88),
    # less than its smallest version (3): trying the edit first would lose the update altogether
    assert plan_next([edit, weights], seconds_left=4.2 * 60)[0] is weights
    shrunk = Ranked(0.3, 0.6, 2.0, 0.5, Option("ce", "labels", 0.6, algorithm="ce"), None, floor=1.5)
    assert plan_next([edit, shrunk], seconds_left=2.7 * 60)[0] is edit, "its smallest version still fits after the edit"
    assert plan_next([edit, shrunk], seconds_left=2.5 * 60)[0] is shrunk
    weak = Ranked(0.05, 0.15, 3.0, 0.5, Option("ce", "labels", 0.15, algorithm="ce"), None)
    assert plan_next([edit, weak], seconds_left=3.5 * 60)[0] is edit, "a weight update the evidence hardly supports waits"
    assert plan_next([edit, weights], seconds_left=None)[0] is edit
    # room is kept for the worst case: the edit's gate may run to the end of validation, and an edit that makes the
    # harness calibrate makes the update's smallest version dearer
    from dataclasses import replace

    assert plan_next([replace(edit, most=2.0), shrunk], seconds_left=2.7 * 60)[0] is shrunk, "a full gate leaves no room"
    assert plan_next([replace(edit, floor_after=2.0), shrunk], seconds_left=2.7 * 60)[0] is shrunk
    assert plan_next([replace(edit, most=1.1, floor_after=1.6), shrunk], seconds_left=2.9 * 60)[0].source == "src"


def test_an_edit_that_would_cut_a_relevant_update_waits_for_it():
    """The order of an edit and an update matters when the edit leaves the update fewer steps: then the more relevant
    goes first."""
    from dataclasses import replace

    from sia.agents.builtin import Ranked, plan_next
    from sia.agents.builtin_edits import Option

    edit = Ranked(0.9, 0.9, 1.0, 0.5, Option("score_labels", "scores", 0.9), "src", most=1.5)
    update = Ranked(0.25, 1.0, 4.0, 0.5, Option("ce", "labels", 1.0, algorithm="ce"), None, floor=2.5)
    assert plan_next([edit, update], 12 * 60)[0] is edit, "no size known: the best per minute"
    assert plan_next([replace(edit, size_after=1.0), update], 12 * 60)[0].source == "src", "the update keeps its size after the edit"
    first, why = plan_next([replace(edit, size_after=0.5), update], 12 * 60)
    assert first is update and "cut ce to 50% of its steps: the more relevant goes first" in why
    weak = replace(update, relevance=0.4, per_minute=0.1)
    assert plan_next([replace(edit, size_after=0.5), weak], 12 * 60)[0].source == "src", "a less relevant update is cut"


def test_a_ce_update_counts_by_the_examples_it_sees_per_label():
    from dataclasses import replace

    task = load_task("sentiment")
    src = render(make_config(task.public_info(), mode="score"))
    rel = {}
    for n in (128, 8):
        s = replace(_state(task, src, _analysis(), levers=("weights",)), train=task.split("train")[:n])
        d = BuiltinFeedbackAgent().decide(s)
        rel[n] = next(r[1] for r in d.ranking if r[0] == "ce")
        assert f"{n / 2:.1f} per label" in d.proposal.rationale
    assert rel[128] == pytest.approx(4 * rel[8], rel=1e-2), "64 examples per label count 2x, 4 count 0.5x"


def test_on_sentiment_the_full_ce_update_goes_before_label_scoring_that_would_cut_it():
    """Generation 1 of a sentiment run (the generating harness, 26 of 48 train answers right, predictions on one label,
    training 2.5x slower than the reference): label scoring is the best per minute. With 18 minutes left the ce update
    on the whole train split fits half of them; after label scoring half the budget would hold fewer of its examples,
    and the update is the more relevant, so it goes first. With 50 minutes left it keeps its two passes over the whole
    split either way, and label scoring goes first, leaving room for it."""
    from dataclasses import replace

    task = load_task("sentiment")
    a = Analysis(48, 26 / 48, Counter({"correct": 26, "wrong": 21, "unparseable": 1}), Counter({"positive": 47}),
                 Counter({"positive": 24, "negative": 24}), Counter())
    s = replace(_state(task, render(make_config(task.public_info())), a), rollout_s=0.4, seconds_left=1100,
                train_slowdown=2.5, champion_val=0.5)
    d = BuiltinFeedbackAgent().decide(s)
    assert d.ranking[0][0] == "score_labels", "label scoring is the best per minute"
    assert isinstance(d.proposal, WeightUpdate) and d.proposal.config["examples"] == len(task.split("train"))
    assert d.proposal.config["heldout"] == LABEL_PRESET["heldout"] > 0, "it stops on its own held-out loss"
    assert re.search(r"score_labels first would cut ce to \d+% of its steps: the more relevant goes first", d.proposal.rationale)
    later = BuiltinFeedbackAgent().decide(replace(s, seconds_left=3000))
    assert isinstance(later.proposal, HarnessEdit) and "leaving room for ce" in later.proposal.rationale


def test_an_edit_is_weighed_at_its_full_gate_and_at_the_update_it_leaves_behind(monkeypatch):
    from dataclasses import replace

    from sia.agents import builtin
    from sia.agents.costs import harness_cost, harness_most

    task = load_task("sentiment")
    cfg = make_config(task.public_info(), mode="score")
    s = replace(_state(task, render(cfg), _analysis()), rollout_s=0.5, val_n=200, seconds_left=900)
    assert harness_most(s, cfg, cfg) * 60 == pytest.approx(10 + (200 + s.analysis.n) * 0.5), "a full gate, then an analysis"
    assert harness_most(s, cfg, cfg) > harness_cost(s, cfg, cfg), "a gate stops early on average, at the end at most"
    ranked, real = [], builtin.plan_next
    monkeypatch.setattr(builtin, "plan_next", lambda r, left: (ranked.extend(r), real(r, left))[1])
    builtin.BuiltinFeedbackAgent().decide(s)
    edits = {r.option.kind: r for r in ranked if r.source is not None}
    update = next(r for r in ranked if r.source is None)
    assert all(r.most is not None and r.most >= r.cost for r in edits.values())
    assert edits["domain_calibration"].floor_after > edits["instruction"].floor_after >= update.floor * 0.99, \
        "on a calibrating harness each ce step also scores content-free inputs"
    assert all(0 < r.size_after <= 1 for r in edits.values()), "the share of the update's steps left after each edit"


def test_the_decision_carries_an_expected_gain_that_the_report_shows_beside_the_realised_one():
    task = load_task("sentiment")
    src = render(make_config(task.public_info()))
    d = BuiltinFeedbackAgent().decide(_state(task, src, _analysis(correct=20, wrong=20), levers=("weights",)))
    assert d.proposal.expected_gain is not None and 0 < d.proposal.expected_gain < 0.5
    assert f"expected gain {d.proposal.expected_gain:+.3f}" in d.proposal.rationale


def test_a_costly_champion_harness_is_offered_for_distillation_into_the_weights():
    from sia.agents.builtin import distillation
    from sia.harness.template import Demo, read_config

    task = load_task("sentiment")
    costly = make_config(task.public_info(), mode="score", calibrate=True,
                         demos=(Demo("a fine film", "positive"), Demo("a dull film", "negative")))
    a = _analysis()
    a.calls = 2 * a.n  # scoring plus the calibration pass
    (option,) = distillation(costly, _state(task, render(costly), a))
    assert option.algorithm == "ce" and "2.0 model calls per example" in option.rationale
    assert option.harness.mode == "score" and not option.harness.calibrate and not option.harness.demos
    assert distillation(costly, _state(task, render(costly), a, levers=("weights",))) == [], "the weights-only arm keeps its harness"
    cheap = make_config(task.public_info(), mode="score")
    one = _analysis()
    one.calls = one.n
    assert distillation(cheap, _state(task, render(cheap), one)) == []
    decision = BuiltinFeedbackAgent().decide(_state(task, render(costly), a))
    assert "distill" in [r[0] for r in decision.ranking]
    assert read_config(render(option.harness)).calibrate is False


def test_the_wider_edit_space_is_offered_from_the_evidence_without_task_answers():
    from dataclasses import replace as dc_replace

    from sia.agents.builtin_edits import edit_clip_input, edit_few_shot, edit_label_words, edit_similar_demos
    from sia.task.loading import Example

    task = load_task("sentiment")
    score = make_config(task.public_info(), mode="score")
    state = _state(task, render(score), _analysis())
    (words,) = edit_label_words(score, state)
    assert words.harness.label_words == {"positive": "Positive", "negative": "Negative"}
    inline, turns = edit_few_shot(score, state)
    assert inline.harness.demo_layout == "inline" and turns.harness.demo_layout == "turns" and inline.relevance > turns.relevance
    assert edit_clip_input(score, state) == [], "sentiment's snippets are short"
    long = [Example(f"l{i}", "train", {"text": "word " * 600}, {"label": "positive"}) for i in range(10)]
    (clip,) = edit_clip_input(score, dc_replace(state, train=long))
    assert clip.harness.max_input_chars == 1500 and "100% of train inputs are longer" in clip.rationale
    (similar,) = edit_similar_demos(score, state)
    assert similar.harness.similar_demos == 4 and similar.harness.demo_layout == "inline"
    assert {d.answer for d in similar.harness.demos} == {"positive", "negative"} and len(similar.harness.demos) >= 4
    assert edit_similar_demos(similar.harness, state) == [], "offered once"


def test_domain_conditional_calibration_scores_random_words_of_the_train_inputs():
    from dataclasses import replace as dc_replace

    from sia.agents.builtin_edits import DOMAIN_INPUTS, domain_inputs, edit_domain_calibration
    from sia.task.loading import Example

    task = load_task("sentiment")
    score = make_config(task.public_info(), mode="score", calibrate=True)
    state = _state(task, render(score), _analysis())
    (dc,) = edit_domain_calibration(score, state)
    inputs = dc.harness.calibrate_inputs
    assert dc.kind == "domain_calibration" and dc.harness.calibrate and len(inputs) == DOMAIN_INPUTS
    words = {w for ex in state.train[:400] for w in str(ex.inputs["text"]).split()}
    assert all(set(x.split()) <= words for x in inputs), "every word comes from a train input"
    typical = sorted(len(str(ex.inputs["text"]).split()) for ex in state.train[:400])[len(state.train[:400]) // 2]
    assert {len(x.split()) for x in inputs} == {typical}, "as long as a typical input"
    assert len(set(inputs)) == DOMAIN_INPUTS and domain_inputs(score, state.train, 0) == inputs, "distinct, and the same for a seed"
    assert edit_domain_calibration(dc.harness, state) == [], "offered once"
    (uncal,) = edit_domain_calibration(dc_replace(score, calibrate=False), state)
    assert uncal.harness.calibrate, "an uncalibrated scoring harness is offered it too"
    assert edit_domain_calibration(make_config(task.public_info()), state) == [], "only for a harness that scores labels"
    texts = ["我想问一下离婚", "工资拖欠怎么办", "车祸赔偿"]
    chinese = [Example(f"c{i}", "train", {"text": t}, {"label": "positive"}) for i, t in enumerate(texts)]
    cjk = domain_inputs(score, chinese, 1)
    assert all(len(x) == 7 and " " not in x and set(x) <= set("".join(str(e.inputs["text"]) for e in chinese)) for x in cjk), (
        "text without spaces is drawn character by character"
    )


def test_a_better_answer_extraction_found_by_replaying_replies_is_proposed():
    """Replies that name the wrong label first and the right one last: replaying them finds `last_label` better. This path
    ran only on tasks sia was not tuned on, and crashed there (`TemplateConfig` indexed as a dict)."""
    from sia.agents.builtin_edits import edit_extraction
    from sia.evaluation.analysis import Reply

    task = load_task("sentiment")
    cfg = make_config(task.public_info())
    train = task.split("train")[:12]
    other = {"positive": "negative", "negative": "positive"}
    replies = [Reply(ex.id, f"{other[ex.target['label']]}? No: {ex.target['label']}.", "", ex.target, 0.0, "stop") for ex in train]
    analysis = Analysis(12, 0.0, Counter({"wrong": 12}), Counter(), Counter(), Counter(), replies)
    (edit,) = edit_extraction(cfg, _state(task, render(cfg), analysis))
    assert edit.harness.extract == "last_label" and "answer extraction 'last_label'" in edit.rationale


def test_with_more_than_a_tenth_of_the_budget_left_an_option_the_evidence_barely_supports_is_tried_rather_than_stopping():
    from dataclasses import replace

    from sia.agents.proposal import Stop

    task = load_task("sentiment")
    s = replace(_state(task, render(make_config(task.public_info(), mode="score")), _analysis()), rollout_s=0.3,
                seconds_left=300, budget_s=600)
    picky = BuiltinFeedbackAgent(min_relevance=100.0)  # no option is supported by the evidence
    d = picky.decide(s)
    assert not isinstance(d.proposal, Stop) and "trying what fits" in d.proposal.rationale
    assert d.proposal.kind in {r[0] for r in d.ranking}, "one of the options that fit, as plan_next picks"
    assert isinstance(picky.decide(replace(s, seconds_left=50)).proposal, Stop), "a tenth or less left: it may stop"
    assert isinstance(picky.decide(replace(s, budget_s=None)).proposal, Stop), "no budget known: the evidence decides"
