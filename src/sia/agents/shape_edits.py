"""Builtin options for answers of other shapes: a vote of the nearest train examples, and sft on the gold answers.

- `edit_neighbours` (labelled tasks): the harness answers with the label most
  of the nearest train examples have in the policy's own embeddings.
- `gold_sft` (open answers: a number, a word, a span): a LoRA update trained on
  the harness's own prompts with the task's gold answers as completions, on the
  whole train split; a tenth is held out and training stops when its loss stops
  improving (`sia.loop.weight_lever.until_heldout_stops`), so the update's
  length comes from this task's loss curve, within what the budget holds.

The answer-extraction edit for open answers lives with the label extraction in
`sia.agents.builtin_edits.edit_extraction`: both replay the champion's recorded
train replies through each reading and keep the one that grades best.
"""

from __future__ import annotations

import random
from dataclasses import replace

from sia.agents.builtin_edits import Option, _edit, evidence
from sia.agents.contract import AgentState
from sia.agents.costs import weights_cost
from sia.harness.template import Demo, TemplateConfig, show
from sia.weights.config import GOLD_PRESET, plan

NEIGHBOUR_POOL = 256
"""Train examples the neighbour vote searches (balanced across labels): the harness embeds them all on its first call,
and a rollout's leave-one-out choice of k grows with their square."""


def edit_neighbours(cfg: TemplateConfig, s: AgentState) -> list[Option]:
    """Answer with the label most of the nearest train examples have in the policy model's own embeddings, with no
    generation: a small model often embeds a task's classes apart better than it names them."""
    labels = cfg.labels
    if cfg.mode == "neighbours" or not labels or cfg.multi_label or cfg.output != "text":
        return []
    by_label: dict[str, list] = {}
    for ex in s.train:
        label = ex.target.get("label")
        if label is not None and str(label) in labels:
            by_label.setdefault(str(label), []).append(ex)
    if len(by_label) < 2:
        return []
    rng = random.Random(s.seed)
    per = max(2, NEIGHBOUR_POOL // len(by_label))
    pool = [Demo(show(cfg, ex.inputs), lab) for lab in sorted(by_label) for ex in rng.sample(by_label[lab], min(per, len(by_label[lab])))]
    a = s.analysis
    why = (f"answer with the label most of the nearest of {len(pool)} train examples have in the policy's own embeddings "
           f"(k chosen by leave-one-out on them), no generation: {a.rate('wrong'):.0%} of replies were wrong and "
           f"{a.rate('unparseable'):.0%} named no label ({evidence(a)})")
    return [_edit("neighbours", replace(cfg, mode="neighbours", demos=tuple(pool), demo_layout="turns", similar_demos=0), why,
                  0.15 + 0.75 * a.rate("wrong") + 0.5 * a.rate("unparseable"))]


def gold_sft(cfg: TemplateConfig | None, s: AgentState, share: float) -> list[Option]:
    """sft on the gold answers of the train split, sized to `share` of the budget left (all of train and two passes at
    most; fewer passes, then fewer examples, when that does not fit): for a generating harness on open answers whose
    replies were wrong or named no answer."""
    gold = getattr(getattr(s.task.grader, "func", s.task.grader), "gold", None)
    a = s.analysis
    if cfg is None or cfg.output != "text" or cfg.mode != "generate" or s.task.labels or gold is None or a.n == 0:
        return []
    miss = a.rate("wrong") + a.rate("unparseable")
    if miss == 0 or s.memory.rejections("gold_sft", s.champion_adapter):
        return []
    settings = {**GOLD_PRESET, "examples": len(s.train), "steps": max(4, 2 * len(s.train) // GOLD_PRESET["prompts_per_step"])}
    while s.seconds_left is not None and weights_cost(plan("sft", settings, "gold"), s) * 60 > share * s.seconds_left:
        if settings["steps"] > 8:
            settings["steps"] //= 2
        elif settings["examples"] > 64:
            settings["examples"] //= 2
        else:
            return []
    why = (f"train the weights on the gold answers of {settings['examples']} train examples, on the harness's own prompts "
           f"(a tenth held out: training stops when its loss stops improving, at most {settings['steps']} steps): "
           f"{a.rate('wrong'):.0%} of replies were wrong and {a.rate('unparseable'):.0%} gave no answer ({evidence(a)})")
    return [Option("gold_sft", why, 0.1 + 0.8 * miss, algorithm="sft", settings=settings)]


SHAPE_EDITS = [edit_neighbours]
