"""The ce objective of the trainer: cross-entropy over a label set, in parts, on calibrating harnesses, with hard negatives."""

import pytest
import torch
from test_grpo import _tiny_model_dir


def test_ce_makes_the_gold_label_the_models_choice_on_every_prompt_in_passes(tmp_path):
    """Label groups: two labels per prompt, the gold one alternating; ce trains each prompt's gold label to the top of the
    label set (and, for a generating harness, raises its own likelihood), taking the prompts in shuffled passes."""
    from sia.weights.config import TrainConfig
    from sia.weights.grpo import shared_prompt_logprobs
    from sia.weights.trainer import Sample, Trainer

    base_dir = _tiny_model_dir(tmp_path)
    labels = {"yes": [20, 2], "no": [21, 2]}  # each label ends the turn
    groups = [Sample(f"g{g}", [1, 5 + g, 9, 40 + g % 2], ids, [], float(name == ("yes" if g % 2 else "no")), name, absolute=True)
              for g in range(8) for name, ids in labels.items()]  # the last prompt token tells the gold label
    t = Trainer(base_dir, TrainConfig(algorithm="ce", steps=100, epochs=8, prompts_per_step=4, lr=1e-2, rank=4))
    assert t.round(groups, 100) == 16, "epochs x groups / prompts_per_step steps, fewer than `steps`"
    seen = [e["step"] for e in t.log]
    assert seen == list(range(1, 17)) and t.log[-1]["loss"] < t.log[0]["loss"] and t.log[-1]["gold_nll"] < t.log[0]["gold_nll"]
    with torch.no_grad():
        lp, _, mask = shared_prompt_logprobs(t.model, [(s.prompt_ids, s.completion_ids) for s in groups])
    seq = (lp * mask).sum(-1).view(8, 2)
    gold = torch.tensor([[s.reward for s in groups[2 * g: 2 * g + 2]] for g in range(8)]).argmax(-1)
    assert torch.equal(seq.argmax(-1), gold), "every prompt's gold label is now the likelier one"
    assert t.log[-1]["label_accuracy"] == 1.0
    clock = iter([100.0, 100.0, 0.0])  # seconds left after each step: room for two more, then none
    assert t.round(groups, 10, time_left=lambda: next(clock)) == 3, "a round stops when the budget left holds no more steps"
    assert "budget left held no more steps (3 of 10 taken" in t.stopped and t.halted, "the update ends there"
    assert t.round([], 10) == 0 and not t.halted, "a round with nothing usable leaves the next round free to go on"


def test_ce_on_a_calibrating_harness_trains_the_calibrated_choice():
    """With content-free scores, the label set's softmax is over score - bias, the choice the harness makes."""
    from sia.weights.trainer import Sample, _label_loss

    new = torch.log(torch.tensor([[0.5, 1.0], [0.25, 1.0], [0.5, 1.0], [0.125, 1.0]]))
    comp = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    samples = [Sample("a", [1], [5], [], 1.0, "pos"), Sample("a", [1], [6], [], 0.0, "neg"),
               Sample("b", [2], [5], [], 0.0, "pos"), Sample("b", [2], [6], [], 1.0, "neg")]
    spans = [(0, 2), (2, 4)]
    raw, raw_stats = _label_loss(torch, new, comp, samples, spans)
    bias = torch.log(torch.tensor([0.5, 0.125, 0.5, 0.125]))  # the model favours "pos" on a content-free input
    cal, cal_stats = _label_loss(torch, new, comp, samples, spans, bias)
    seq = new[:, 0]
    expect_raw = -(torch.log_softmax(seq[:2], 0)[0] + torch.log_softmax(seq[2:], 0)[1]) / 2
    expect_cal = -(torch.log_softmax(seq[:2] - bias[:2], 0)[0] + torch.log_softmax(seq[2:] - bias[2:], 0)[1]) / 2
    assert float(raw) == pytest.approx(float(expect_raw)) and float(cal) == pytest.approx(float(expect_cal))
    assert raw_stats["label_accuracy"] == 0.5 and cal_stats["label_accuracy"] == 0.0, "calibrated, b's gold is no longer chosen"


def test_a_ce_step_in_parts_has_the_gradient_of_the_whole_step(tmp_path, monkeypatch):
    """Long prompts times many labels do not fit in memory at once: the step runs in parts whose weighted gradients add
    up to the whole step's."""
    import sia.weights.trainer as tr
    from sia.weights.config import TrainConfig

    base_dir = _tiny_model_dir(tmp_path)
    groups = {f"g{g}": [tr.Sample(f"g{g}", [1, 5 + g, 9, 40 + g % 3][: 3 + g % 2], [20 + k, 2], [], float(k == g % 3), f"l{k}",
                                  absolute=True) for k in range(3)] for g in range(6)}

    def grads(part_tokens):
        monkeypatch.setattr(tr, "CE_PART_TOKENS", part_tokens)
        t = tr.Trainer(base_dir, TrainConfig(algorithm="ce", steps=1, prompts_per_step=6, lr=1e-2, rank=4))
        t.opt.step = lambda: None  # keep the gradient for the comparison
        t._step(groups, sorted(groups), None)
        return t.log[-1], torch.cat([p.grad.flatten() for p in t.params])

    whole, g_whole = grads(10_000)
    parts, g_parts = grads(20)
    assert whole["parts"] == 1 and parts["parts"] == 6
    assert torch.allclose(g_parts, g_whole, atol=1e-6) and float(g_whole.abs().sum()) > 0
    assert parts["loss"] == pytest.approx(whole["loss"], abs=1e-5) and parts["label_accuracy"] == whole["label_accuracy"]


def test_content_free_scores_shared_by_every_part_carry_the_gradient_of_the_whole_step(tmp_path, monkeypatch):
    """On a calibrating harness each sample's score is less its mean score on content-free inputs, which every part of a
    step shares: computed once, their gradient is the one a single pass over the whole step gives."""
    from dataclasses import replace

    import sia.weights.trainer as tr
    from sia.weights.config import TrainConfig
    from sia.weights.grpo import shared_prompt_logprobs

    base_dir = _tiny_model_dir(tmp_path)
    free = [((1, 7, 9), (20 + k, 2)) for k in range(3)], [((1, 8, 8, 9), (20 + k, 2)) for k in range(3)]
    groups = {f"g{g}": [tr.Sample(f"g{g}", [1, 5 + g, 9, 40 + g % 3][: 3 + g % 2], [20 + k, 2], [], float(k == g % 3), f"l{k}",
                                  bias=tuple(f[k] for f in free[: 1 + g % 2])) for k in range(3)] for g in range(6)}
    batch = [x for g in sorted(groups) for x in groups[g]]
    ref = tr.Trainer(base_dir, TrainConfig(algorithm="ce", steps=1, prompts_per_step=6, rank=4))
    new, _, comp = shared_prompt_logprobs(ref.model, [(x.prompt_ids, x.completion_ids) for x in batch])
    pairs = sorted({p for x in batch for p in x.bias})
    seq = dict(zip(pairs, ref._pair_scores(pairs)))
    bias = torch.stack([torch.stack([seq[p] for p in x.bias]).mean() for x in batch])
    loss, _ = tr._label_loss(torch, new, comp, batch, [(3 * i, 3 * i + 3) for i in range(6)], bias)
    loss.backward()
    g_ref = torch.cat([p.grad.flatten() for p in ref.params])

    def grads(part_tokens):
        monkeypatch.setattr(tr, "CE_PART_TOKENS", part_tokens)
        t = tr.Trainer(base_dir, TrainConfig(algorithm="ce", steps=1, prompts_per_step=6, rank=4))
        t.opt.step = lambda: None  # keep the gradient for the comparison
        calls = []
        scores = t._pair_scores
        t._pair_scores = lambda ps: calls.append(len(ps)) or scores(ps)
        t._step(groups, sorted(groups), None)
        return t.log[-1], torch.cat([p.grad.flatten() for p in t.params]), calls

    whole, g_whole, calls_whole = grads(10_000)
    parts, g_parts, calls_parts = grads(20)
    assert whole["parts"] == 1 and parts["parts"] == 6 and float(g_ref.abs().sum()) > 0
    assert torch.allclose(g_whole, g_ref, atol=1e-6) and torch.allclose(g_parts, g_ref, atol=1e-6)
    loss = float(loss.detach())
    assert whole["loss"] == pytest.approx(loss, abs=1e-5) and parts["loss"] == pytest.approx(loss, abs=1e-5)
    assert calls_whole == [6], "the 6 content-free candidates fit one part: scored once, the gradient flows through that pass"
    assert sum(calls_parts[:1]) == 6 and sum(calls_parts[1:]) == 6, \
        "larger than a part: scored once without gradient, then again with it, in parts"
    plain = {g: [replace(x, bias=()) for x in ss] for g, ss in groups.items()}
    t = tr.Trainer(base_dir, TrainConfig(algorithm="ce", steps=1, prompts_per_step=6, rank=4))
    t._pair_scores = lambda ps: pytest.fail("no content-free scores without a calibrating harness")
    t._step(plain, sorted(plain), None)


def test_the_collapse_watch_sees_the_calibrated_choice_on_a_calibrating_harness(tmp_path):
    """A calibrating harness answers with the label whose score less its content-free bias is highest: that, not the raw
    likelihood, is the answer the model prefers when the trainer watches for a collapse."""
    import sia.weights.trainer as tr
    from sia.weights.config import TrainConfig
    from sia.weights.grpo import shared_prompt_logprobs

    base_dir = _tiny_model_dir(tmp_path)
    groups = {f"g{g}": [tr.Sample(f"g{g}", [1, 5 + g, 9], [20 + k, 2], [], float(k == 0), f"l{k}") for k in range(3)]
              for g in range(4)}
    t = tr.Trainer(base_dir, TrainConfig(algorithm="ce", steps=1, prompts_per_step=4, rank=4))
    batch = [s for g in sorted(groups) for s in groups[g]]
    with torch.no_grad():
        lp, _, mask = shared_prompt_logprobs(t.model, [(s.prompt_ids, s.completion_ids) for s in batch])
    raw = (lp * mask).sum(-1).view(4, 3)
    bias = torch.zeros(4, 3)
    bias[torch.arange(4), raw.argmax(-1)] = 1000.0  # each group's raw favourite is the content-free favourite by far
    t._bias = lambda samples, keep_graph=False: bias.flatten()
    t._step(groups, sorted(groups), None)
    calibrated = (raw - bias).argmax(-1)
    assert [p for p, _ in t.window] == [f"l{int(k)}" for k in calibrated]
    assert all(int(c) != int(r) for c, r in zip(calibrated, raw.argmax(-1)))


def test_a_ce_step_scores_a_random_few_content_free_inputs_the_same_for_every_sample():
    """`calibration_inputs` of a calibrating harness's content-free inputs a step: drawn at random, at the same positions for
    every sample (a label group's candidates stay calibrated against the same inputs); all when there are no more."""
    import random

    from sia.weights.samples import Sample, calibration_subset

    free = [((1, 100 + i), (20 + k, 2)) for i in range(8) for k in range(2)]
    batch = [Sample(f"g{g}", [1, g], [20 + k, 2], [], float(k == 0), f"l{k}", bias=tuple(free[2 * i + k] for i in range(8)))
             for g in range(3) for k in range(2)]
    rng = random.Random(0)
    steps = [calibration_subset(batch, 4, rng) for _ in range(5)]
    for sub in steps:
        inputs = {tuple(p[1] for p, _ in s.bias) for s in sub}
        assert len(inputs) == 1 and len(next(iter(inputs))) == 4, "the same 4 inputs for every sample"
        assert all(c[0] == 20 + int(s.output[1]) for s in sub for _, c in s.bias), "each candidate keeps its own label"
    assert len({tuple(p for p, _ in sub[0].bias) for sub in steps}) > 1, "drawn anew each step"
    assert calibration_subset(batch, 0, rng) is batch and calibration_subset(batch, 8, rng) is batch


def test_ce_negatives_keep_the_gold_candidates_and_the_wrong_ones_scored_highest(tmp_path):
    """With `negatives`, a ce group is its gold candidates and the wrong ones the harness scored highest when collecting
    (random ones when it recorded no scores); a group with no more wrong candidates than that is whole."""
    from sia.weights.config import TrainConfig
    from sia.weights.samples import hardest
    from sia.weights.trainer import Sample, Trainer

    base_dir = _tiny_model_dir(tmp_path)
    scores = [-1.0, -9.0, -2.0, -5.0, -0.5, -7.0]  # candidate 4 (the likeliest) is gold
    group = [Sample("g", [1, 2, 3], [10 + k, 2], [s, 0.0], float(k == 4), f"l{k}") for k, s in enumerate(scores)]
    t = Trainer(base_dir, TrainConfig(algorithm="ce", negatives=2, rank=4))
    assert [s.output for s in hardest(group, 2, t.rng)] == ["l0", "l2", "l4"]
    unscored = [Sample("g", [1, 2, 3], [10 + k, 2], [], float(k == 0), f"l{k}", absolute=True) for k in range(6)]
    kept = hardest(unscored, 2, t.rng)
    assert len(kept) == 3 and kept[0].output == "l0"
    assert hardest(group[3:], 2, t.rng) == group[3:]
    t.round(group + [Sample("h", [1, 5, 3], s.completion_ids, s.old_logprobs, s.reward, s.output) for s in group], 1)
    assert t.log[0]["tokens"] == 2 * 3 * 2, "each step trains on the kept candidates only"


def test_a_ce_update_trains_until_its_held_out_loss_stops_improving_in_passes_that_span_the_reads(tmp_path):
    """A ce plan with a held-out share: the loss of the held-out prompts is read every quarter pass, training stops after
    two reads without a gain or at the plan's passes over the rest, and the adapter keeps its best read's weights. The
    shuffled pass goes on across the reads: every trained prompt is seen once before any is seen twice."""
    from types import SimpleNamespace

    from sia.loop.weight_lever import until_heldout_stops
    from sia.weights.config import plan
    from sia.weights.trainer import Sample, Trainer

    base_dir = _tiny_model_dir(tmp_path)
    labels = {"yes": [20, 2], "no": [21, 2]}
    samples = [Sample(f"g{g}", [1, 5 + g, 9, 40 + g % 2], ids, [], float(name == ("yes" if g % 2 else "no")), name, absolute=True)
               for g in range(40) for name, ids in labels.items()]
    wp = plan("ce", {"examples": 40, "samples": 1, "epochs": 3.0, "steps": 400, "prompts_per_step": 4, "heldout": 0.1,
                     "lr": 1e-2, "rank": 4})
    assert wp.most_steps() == 27, "three passes over the 36 prompts not held out"
    t = Trainer(base_dir, wp.train)
    chosen: list[str] = []
    step = t._step
    t._step = lambda groups, picked, on_step: (chosen.extend(picked), step(groups, picked, on_step))[1]
    said: list[str] = []
    ctx = SimpleNamespace(observer=SimpleNamespace(on_phase=said.append, on_train_step=None), seconds_left=lambda: 1e9)
    import random
    taken = until_heldout_stops(t, samples, wp, random.Random(0), ctx, gate_s=0.0)
    reads = [h["heldout_loss"] for h in t.heldout_log]
    assert 1 <= taken <= 27 and [h["steps"] for h in t.heldout_log][0] == 0 and len(reads) >= 2, t.heldout_log
    assert min(reads) < reads[0], "training lowered the held-out prompts' loss"
    assert t.heldout_loss(samples[:8]) is not None and t.stopped and "held-out" in " ".join(said)
    assert len(set(chosen[:36])) == min(36, len(chosen)), "no prompt twice within a pass, across the reads"
