"""The cost model both Feedback-Agents use: minutes a change of each lever costs, measured where possible.

A lever's cost is measured from its past tries in this run (design memory
keeps the seconds of every generation); before the first try it is
estimated from the champion's measured seconds per validation rollout and, for
weights, from the plan's collection and training steps. A change that costs
more than the budget left is not proposed.
"""

from __future__ import annotations

from sia.agents.contract import AgentState
from sia.weights.config import WeightPlan

TRAIN_STEP_S = 7.0
"""Seconds per training step of 4 groups x 8 samples of sentiment on a 2-core CPU (bench/grpo_step.py measures it)."""


CE_GROUP_S = 0.55
"""Seconds per label group (prompt forward and backward, the labels on its cache) of ce training on sentiment's ~80-token
prompts on a 2-core CPU (measured: 16 groups a step in 8.3 s)."""


def affordable(minutes: float, s: AgentState) -> bool:
    return s.seconds_left is None or minutes * 60 <= s.seconds_left


def gate_seconds(s: AgentState) -> float:
    """About half a validation pass (gates often stop early), plus a smoke test."""
    return 10 + 0.5 * s.val_n * s.rollout_s


def harness_cost(s: AgentState) -> float:
    """Minutes a harness edit costs: measured from past tries, else a gate."""
    measured = s.memory.seconds_per_try("harness")
    return (measured or gate_seconds(s)) / 60


def weights_cost(wp: WeightPlan, s: AgentState, distill: bool = False) -> float:
    """Minutes a weight update costs: the plan's collection + training + a gate, or past tries when they took longer
    (a try that found nothing to train on ends in seconds and says nothing of what a full update costs). A distillation
    collects twice: the teacher's answers, then the student's prompts."""
    measured = s.memory.seconds_per_try("weights") or 0.0
    collect = wp.rounds * wp.examples * wp.samples * s.rollout_s * (1.5 if wp.samples > 1 else 1.0) * (2 if distill else 1)
    train = wp.rounds * wp.train.steps * TRAIN_STEP_S * wp.train.prompts_per_step / 4
    if wp.train.algorithm == "ce":
        train = wp.rounds * wp.train.steps_for(wp.examples) * wp.train.prompts_per_step * CE_GROUP_S
    return max(measured, collect + train + gate_seconds(s)) / 60
