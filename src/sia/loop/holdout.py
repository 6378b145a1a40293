"""What the agents learn of validation: a ladder, so the validation set can be reused by the attempts of a run.

Validation is reused adaptively: each attempt is chosen after the agents saw how
earlier ones scored there. An agent that learned every validation score to full
precision could fit the validation examples themselves, and the gate would then
accept a gain that holds only there. sia's agents never see a validation
example, output or per-example score; they see validation through the design
memory (each attempt's delta) and the champion's score. With `--holdout ladder`
(the default) those numbers are released the way the Ladder mechanism releases a
leaderboard (Blum & Hardt, "The Ladder: a reliable leaderboard for machine
learning competitions", ICML 2015), which the gate already is in part:

- a change moves the champion only when the gate accepts it: a paired gain of at
  least tau, significant at the gate's level;
- every number an agent reads is rounded to its own standard error (the gate's
  paired standard error for a delta, the score's for the champion), and no
  p-value is shown: an agent learns the sign and size of an effect to within
  its noise, and nothing finer.

Why a ladder and not the alternatives the literature offers:

- Thresholdout (Dwork et al., Science 2015) adds noise to answers about a
  holdout; the gate's decision must stay exact to keep its error rate, so noise
  would go only into what agents see, where rounding to the standard error
  releases less information (a few bits per attempt, the ladder's argument)
  without making a sign flip.
- A fresh validation slice every k gates halves or worse the examples each gate
  sees: on n = 200 the power for +0.05 falls sharply (`bench/alpha_scope.py
  --n 100`), a price every run would pay for a leak the ladder already bounds.

What it costs: no power at the gate, whose test reads the exact scores. What
agents lose is precision they could not use: a delta within one standard error
of zero reads as 0. `--holdout exact` shows every number in full (p-values too),
as earlier versions did. The final champion's score that sia reports is the
sealed test's, which no agent and no gate ever saw.
"""

from __future__ import annotations

import math
from dataclasses import replace

from sia.store.memory import Memory, lesson_for

Z95 = 1.959964
"""A 95% interval is about this many standard errors either side of its centre."""


def step(ci: tuple[float, float] | list[float] | None) -> float:
    """The standard error a 95% interval implies, or 0 where there is none (a change refused before any gate)."""
    if not ci or any(c is None or not math.isfinite(c) for c in ci):
        return 0.0
    return max(0.0, (float(ci[1]) - float(ci[0])) / (2 * Z95))


def rung(value: float, se: float) -> float:
    """`value` rounded to a multiple of `se` (unchanged when se is 0)."""
    return round(value / se) * se if se > 0 else value


def ladder_memory(memory: Memory, steps: dict[int, float]) -> Memory:
    """The design memory as agents see it: each gated attempt's delta rounded to its standard error (`steps`, by
    generation), no p-value, and a lesson written from the rounded delta. An attempt refused before its gate keeps its
    lesson: it holds no validation number."""
    out = []
    for e in memory.entries:
        se = steps.get(e.generation, 0.0)
        if se <= 0:
            out.append(e)
            continue
        shown = rung(e.delta, se)
        why = "the gate accepted it" if e.accepted else f"not a significant gain at the gate (delta {shown:+.3f} to +/- {se:.3f})"
        out.append(replace(e, delta=shown, p_value=math.nan, lesson=lesson_for(e.kind, e.accepted, shown, why)))
    return Memory(out)

