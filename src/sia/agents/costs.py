"""The cost model both Feedback-Agents use: minutes a change of each lever costs, measured where possible.

A harness edit's cost is measured from its past tries in this run (design
memory keeps the seconds of every generation); before the first try it is
estimated from the champion's measured seconds per validation rollout. A
weight update is priced from its plan's collection and training steps, scaled
by how much longer this run's past updates took than their own plans priced. A
change that costs more than the budget left is not proposed.
"""

from __future__ import annotations

import time

from sia.agents.contract import AgentState
from sia.errors import SiaError
from sia.harness.template import TemplateConfig, read_config, show
from sia.weights.config import WeightPlan, plan

TRAIN_STEP_S = 7.0
"""Seconds per training step of 4 groups x 8 samples of sentiment on a 2-core CPU (bench/grpo_step.py measures it)."""


CE_GROUP_S = 0.32
"""Seconds per label group of ce training on sentiment at `REFERENCE_GFLOPS`: its own prompt tokens forward and
backward, its share of the opening the step's prompts share, its labels on its cache. bench/shared_prefix.py measured 16
groups a step in 9.7 s where the speed probe read 62-64 GFLOP/s (1.9x slower than the reference)."""
CE_GROUP_TOKENS = 37
"""The tokens of such a group as `ce_group_seconds` counts them: a 16th of the opening (58), the input (26), and the
labels' tokens with the end of the turn (6) at `CE_LABEL_WEIGHT`."""
CE_LABEL_WEIGHT = 1.2
"""A label token counts this many prompt tokens: it also computes the whole vocabulary's logits (a quarter of a token's
pass through SmolLM2's layers) and their log-softmax. Fitted to the ce steps bench/shared_prefix.py measured on sentiment
(2 labels, 9.7 s) and on LawBench's topics (20 labels of ~9 tokens, 74.7 s, the probe not read alongside): 1.1-1.2
prices both at one rate per token."""
CE_SHARED_BY = 16
"""Prompts a ce step runs as one batch, whose common opening runs once (`sia.weights.grpo.shared_prompt_logprobs`)."""


REFERENCE_GFLOPS = 120.0
"""The fp32 matrix-multiply rate (GFLOP/s, torch's default threads) at which `TRAIN_STEP_S` and `CE_GROUP_S` hold: training
is matrix multiplies, so its time scales with this rate. Fitted on a 2-core AMD EPYC with AVX2 where the probe measured 62-64
GFLOP/s and a sentiment ce step of 16 groups (each prompt run whole then) took 15-17 s, 1.8x its price at the reference
rate (120 / 63 = 1.9x)."""


PROBE_TTL_S = 120.0
"""Seconds a speed probe is trusted. This machine's rate moved from 62-64 to 35-47 GFLOP/s between sittings of one day, so
a run probes again at its next generation once this has passed rather than once per process."""
PROBE_ROUNDS = 5
"""Rounds of a probe, `PROBE_GAP_S` apart; the probe keeps the best. Back to back (0.3 s in all) one probe read 39 GFLOP/s,
yet the ce steps right after it took only 17% longer than when probes read 62-64 (a moment's slowness, not the
machine's); twelve probes two seconds apart read 45-67, mostly 60-65."""
PROBE_GAP_S = 0.2
_probe: tuple[float, float] | None = None
"""The last probe: when (`time.monotonic`) and the slowdown it measured."""


def machine_slowdown() -> float:
    """`REFERENCE_GFLOPS` over the rate this machine multiplies fp32 matrices at (the best of `PROBE_ROUNDS` rounds of
    4 products of the sizes a SmolLM2 layer multiplies: 0.3 s of work over about 1 s), between 0.1 and 20; measured again
    once `PROBE_TTL_S` has passed."""
    global _probe
    if _probe is not None and time.monotonic() - _probe[0] < PROBE_TTL_S:
        return _probe[1]
    import torch

    a, b = torch.randn(1024, 576), torch.randn(576, 1536)
    a @ b  # the first product pays for thread start-up
    best = float("inf")
    for round_ in range(PROBE_ROUNDS):
        if round_:
            time.sleep(PROBE_GAP_S)
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        best = min(best, (time.perf_counter() - t0) / 4)
    gflops = 2 * 1024 * 576 * 1536 / best / 1e9
    _probe = (time.monotonic(), min(20.0, max(0.1, REFERENCE_GFLOPS / gflops)))
    return _probe[1]


def ce_group_seconds(s: AgentState) -> float:
    """Seconds per ce label group on this task at `REFERENCE_GFLOPS`: `CE_GROUP_S` scaled by the tokens a group computes
    (a `CE_SHARED_BY`th of the instruction and chat template, its input, its labels on the prompt's cache; see `_tokens`)."""
    labels = s.task.labels or []
    if not labels or not s.train:
        return CE_GROUP_S
    head = _tokens(s.task.public_info().get("instruction") or "") + 30  # the instruction and the chat template
    shown = [_tokens(" ".join(str(v) for v in ex.inputs.values())) for ex in s.train[:50]]
    tokens = head / CE_SHARED_BY + sum(shown) / len(shown) + CE_LABEL_WEIGHT * sum(_tokens(x) + 1 for x in labels)
    return CE_GROUP_S * max(1.0, tokens / CE_GROUP_TOKENS)


def _tokens(text: str) -> float:
    """About how many tokens a small model's byte-level BPE makes of `text`: 4 ASCII characters a token, 2 tokens for any
    other character (SmolLM2: 8 tokens for a 4-character Chinese label, 107-201 for a LawBench consultation)."""
    ascii_chars = sum(c.isascii() for c in text)
    return ascii_chars / 4 + 2 * (len(text) - ascii_chars)


def affordable(minutes: float, s: AgentState) -> bool:
    return s.seconds_left is None or minutes * 60 <= s.seconds_left


def gate_seconds(s: AgentState) -> float:
    """About half a validation pass (gates often stop early), plus a smoke test."""
    return 10 + 0.5 * s.val_n * s.rollout_s


def harness_cost(s: AgentState, old: TemplateConfig | None = None, new: TemplateConfig | None = None) -> float:
    """Minutes a harness edit costs: measured from past tries, else a gate; for an edit from template config `old` to
    `new` that keeps how the model is asked (scoring or generating), scaled by how much more (or less) the new harness
    makes the policy read per example (`reading`). A switch between scoring and generating is not scaled: reading a
    prompt and decoding a reply cost differently per token (on LawBench the token count priced label scoring at 2.6x a
    gate, and the builtin agent then took a longer reply, +0.000, before label scoring, +0.175)."""
    return (s.memory.seconds_per_try("harness") or gate_seconds(s)) * _reading_factor(s, old, new) / 60


def _reading_factor(s: AgentState, old: TemplateConfig | None, new: TemplateConfig | None) -> float:
    """How much more (or less) `new` makes the policy read per example than `old`, when both ask the same way."""
    if old is None or new is None or old.mode != new.mode or not s.train:
        return 1.0
    return min(10.0, max(0.25, (ROLLOUT_TOKENS + reading(new, s)) / (ROLLOUT_TOKENS + reading(old, s))))


def harness_most(s: AgentState, old: TemplateConfig | None = None, new: TemplateConfig | None = None) -> float:
    """Minutes a harness edit may take at most: its gate run to the end of validation (a close call is decided only
    there) and, once accepted, the next generation's analysis of the new champion on train, scaled as in `harness_cost`;
    or its typical cost when past tries took longer. What a weight update waiting behind the edit must survive: on
    sentiment domain calibration was priced at 1.2 minutes; its gate ran all 200 examples (+0.095, p 0.045), and 2.2
    minutes later no ce update worth a gate fitted the budget left."""
    full = (10 + (s.val_n + s.analysis.n) * s.rollout_s) * _reading_factor(s, old, new) / 60
    return max(harness_cost(s, old, new), full)


ROLLOUT_TOKENS = 30
"""A rollout's fixed cost (its sandboxed process, its HTTP calls) in tokens computed: fitted to one measured pair of
sentiment gates in a 15-minute run: demonstrations chosen per input took 3.5 min for 120 examples, fixed ones 1.1 min for
112, 3.0x per example; `reading` gives them 155 and 31 tokens, and (30 + 155) / (30 + 31) = 3.0."""


def reading(cfg: TemplateConfig, s: AgentState) -> float:
    """About how many tokens the policy computes per example under `cfg`, counting what changes between examples: the
    input (clipped), demonstrations chosen per input, and each scored label or generated reply, once per call. What is
    the same for every example (instruction, fixed demonstrations, content-free calibration prompts) is read once and
    kept: llama.cpp keeps a shared prompt prefix, and the service keeps scored requests."""
    shown = [show(cfg, ex.inputs) for ex in s.train[:50]]
    if cfg.max_input_chars:
        shown = [x[: cfg.max_input_chars] for x in shown]
    per_input = sum(_tokens(x) for x in shown) / max(1, len(shown))
    if cfg.similar_demos and cfg.demos:
        per_demo = sum(_tokens(d.input + d.answer) + 4 for d in cfg.demos) / len(cfg.demos)
        per_input += cfg.similar_demos * per_demo
    if cfg.mode == "score" and cfg.labels:
        words = [cfg.label_words.get(label, label) for label in cfg.labels]
        return (1 + len(cfg.ensemble)) * (per_input + sum(_tokens(w) + 1 for w in words))
    return per_input + cfg.votes * cfg.max_tokens / 2 + (per_input / 2 if cfg.retry else 0)


def content_free_inputs(s: AgentState, most: int) -> int:
    """Content-free inputs a ce step on the champion scores besides its groups: `most` (`TrainConfig.calibration_inputs`)
    of a calibrating harness's, or all when `most` is 0. Each is a prompt with the label set, priced as a group: 4 inputs
    with 16 groups price a step 25% over label scoring. Measured on sentiment in runs on this CPU: ~14 s a step on label
    scoring, ~20 s with a domain-calibrated champion's 8 inputs; 4 of them take 14% off that (bench/ce_variants.py), ~17 s."""
    cfg = read_config(s.champion_source)
    if cfg is None or cfg.mode != "score" or not cfg.calibrate:
        return 0
    return min(len(cfg.calibrate_inputs), most) if most else len(cfg.calibrate_inputs)


def weights_cost(wp: WeightPlan, s: AgentState, distill: bool = False) -> float:
    """Minutes a weight update costs: the plan's collection + training + a gate (`_weights_seconds`), times how much
    longer this run's past weight updates took than that sum prices them (`weights_overrun`). A distillation collects
    twice: the teacher's answers, then the student's prompts. Training is scaled by the machine's `train_slowdown`
    (collection and gate are measured rollout rates already)."""
    return _weights_seconds(wp, s, distill) * weights_overrun(s, wp, distill) / 60


def _weights_seconds(wp: WeightPlan, s: AgentState, distill: bool) -> float:
    collect = wp.rounds * wp.examples * wp.samples * s.rollout_s * (1.5 if wp.samples > 1 else 1.0) * (2 if distill else 1)
    train = wp.rounds * wp.train.steps * TRAIN_STEP_S * wp.train.prompts_per_step / 4
    if wp.train.algorithm == "ce":
        per_step = wp.train.prompts_per_step + (0 if distill else content_free_inputs(s, wp.train.calibration_inputs))
        train = wp.rounds * wp.most_steps() * per_step * ce_group_seconds(s)
        if wp.train.heldout > 0:  # its loss read four times a pass, a forward pass (a third of a step's work) per group
            passes = wp.most_steps() * wp.train.prompts_per_step / max(1.0, wp.examples * (1 - wp.train.heldout))
            train += 4 * passes * wp.train.heldout * wp.examples * ce_group_seconds(s) / 3
    return collect + train * s.train_slowdown + gate_seconds(s)


def weights_overrun(s: AgentState, wp: WeightPlan, distill: bool = False) -> float:
    """The most that a past weight update of this run took over its price (its measured seconds over what
    `_weights_seconds` gives its own plan now), at least 1: a try that found nothing to train on ends in seconds and
    says nothing of what a full update costs. Scaling by each try's own plan prices a smaller update below a larger
    one that was measured: on sentiment a 16-step ce took 4.7 minutes with its gate and the new champion's validation;
    taken as the floor of any update, that priced the 8-step one at 4.7 minutes too, and a run with 4.9 minutes left
    (90% of it: 4.4) stopped instead of training again.
    A try with no plan on record (a run from before plans were kept) is compared with `wp`."""
    worst = 1.0
    for e in s.memory.entries:
        if e.lever != "weights" or e.seconds <= 0:
            continue
        past, past_distill = wp, distill
        if e.weight_plan and e.weight_plan.get("algorithm"):
            try:
                past = plan(e.weight_plan["algorithm"], e.weight_plan.get("config"), e.weight_plan.get("data") or "train")
            except SiaError:
                continue
            past_distill = e.weight_plan.get("data") == "distill"
        worst = max(worst, e.seconds / _weights_seconds(past, s, past_distill))
    return worst
