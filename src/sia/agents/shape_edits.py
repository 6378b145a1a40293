"""Builtin edits for answers of other shapes: a vote of the nearest train examples for labelled tasks.

The answer-extraction edit for open answers (a number, a word, a span) lives
with the label extraction in `sia.agents.builtin_edits.edit_extraction`: both
replay the champion's recorded train replies through each reading and keep the
one that grades best, so the reading is measured on the task, not guessed.
"""

from __future__ import annotations

import random
from dataclasses import replace

from sia.agents.builtin_edits import Option, _edit, evidence
from sia.agents.contract import AgentState
from sia.harness.template import Demo, TemplateConfig, show

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


SHAPE_EDITS = [edit_neighbours]
