"""Builtin options for answers of other shapes: a vote of the nearest train examples, option scoring over the values
the gold answers take, and sft on the gold answers.

- `edit_neighbours` (labelled tasks): the harness answers with the label most
  of the nearest train examples have in the policy's own embeddings.
- `edit_answer_set` (no declared label set, a few gold values: the letters of
  a multiple-choice task): those values are scored by log-likelihood as labels.
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
from collections import Counter
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


ANSWER_SET_MOST = 12
"""The most distinct gold answers a task without a label set may have for `edit_answer_set` to treat them as one."""


def edit_answer_set(cfg: TemplateConfig, s: AgentState) -> list[Option]:
    """Option scoring where the task declares no label set but its train split's gold answers take a few values (the
    letters of a multiple-choice task, yes/no, a rating): those values become the labels, and each is scored by
    log-likelihood instead of free generation, so no reply is malformed and the choice is the model's likeliest."""
    gold = getattr(getattr(s.task.grader, "func", s.task.grader), "gold", None)
    if cfg.labels or cfg.output != "text" or cfg.mode != "generate" or s.task.labels or gold is None or not s.train:
        return []
    try:
        answers = Counter(str(gold(e)).strip() for e in s.train)
    except Exception:  # noqa: BLE001 (a grader whose gold needs more than the example: no answer set to read)
        return []
    if not 2 <= len(answers) <= ANSWER_SET_MOST or min(answers.values()) < 2 or any(not a or "\n" in a for a in answers):
        return []
    labels = tuple(sorted(answers))
    a = s.analysis
    why = (f"the {len(s.train)} train answers take only {len(labels)} values ({', '.join(labels)}): score each by "
           f"log-likelihood as the label set instead of free generation: {a.rate('unparseable'):.0%} of replies gave no "
           f"valid answer and {a.rate('wrong'):.0%} were wrong ({evidence(a)})")
    return [_edit("score_options", replace(cfg, labels=labels, mode="score", calibrate=a.skew > 0.15), why,
                  1.5 * a.rate("unparseable") + a.rate("wrong") + 0.8 * a.skew)]


SHAPE_EDITS = [edit_neighbours, edit_answer_set]
