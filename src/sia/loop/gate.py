"""The gate: keep a challenger only if it beats the champion by at least tau, significantly.

Champion and challenger are compared on the same validation examples with the
same seeds, so the test is paired:

- binary scores: exact one-sided McNemar test (a binomial test on the
  discordant pairs);
- continuous scores: one-sided paired permutation test (random sign flips of
  the per-example differences, seeded).

The delta's 95% CI is a seeded paired bootstrap. Accept iff delta >= tau and
p < alpha. Which alpha: by default each gate's share of the run's alpha, so
that over a whole run the chance that any accepted change was noise is at most
alpha (`sia.loop.alpha`).

A change whose point is to be cheaper (distillation of the harness into the
weights) is judged for non-inferiority instead: tau is set to -margin and the
test is of H0 "the challenger is worse by margin or more", a paired
permutation test on the differences shifted by the margin; the loop then also
requires fewer model calls per example.

Sequential testing: the challenger is evaluated in chunks. After each chunk,
`decided` asks whether the full-set decision is already fixed: if the challenger
would be accepted even scoring the minimum on every remaining example, or
rejected even scoring the maximum, the evaluation stops (curtailment, which
gives the same decision as the full test). At an interim look, a challenger is
also accepted when its p-value is already below `interim_alpha` (0.001 by
default: the Haybittle-Peto boundary, which leaves the overall false-accept
rate essentially at alpha; a gate that spends a share of the run's alpha pays
for its looks exactly, see `GateConfig.looks`). A futility rule also stops a
challenger that is behind the champion after half of the examples; it can only
turn an accept into a reject, never the reverse, so it does not raise the
false-accept rate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.special import bdtrc

from sia.evaluation.stats import bootstrap_ci, sign_flip_p


class GateConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)
    tau: float = Field(0.01, ge=0)
    """Smallest gain the gate accepts, in the task's score units (absolute)."""
    alpha: float = Field(0.05, gt=0, le=0.5)
    """Significance level: of the run as a whole with --alpha-scope run (the chance that any accepted change was noise),
    of each gate's one-sided paired test with --alpha-scope gate."""
    alpha_scope: Literal["gate", "run"] = "run"
    """run: the gates of a run share alpha (online fallback; docs/loop.md), so the run-wide false-accept rate is at
    most alpha; gate: each gate tests at alpha."""
    holdout: Literal["ladder", "exact"] = "ladder"
    """What the agents read of validation: ladder rounds each delta and score to its standard error and hides p-values,
    so validation can be reused across a run's attempts; exact shows every number (docs/loop.md)."""
    chunk: int = Field(40, ge=1)
    """Validation examples evaluated between two sequential looks of the gate."""
    interim_alpha: float = Field(0.001, gt=0, le=0.5, json_schema_extra={"cli": False})
    """Accept at an interim look only below this p-value (Haybittle-Peto)."""
    looks: int | None = Field(None, ge=0, json_schema_extra={"cli": False})
    """When set (a gate whose level is its share of the run's alpha, `sia.loop.alpha.gate_for`): the interim boundary
    applies only when the examples seen are a multiple of `chunk`, at most this many times, and `alpha` is what the
    final test keeps once they are paid for, so a gate's false-accept rate is at most its level however it looks."""
    futility_after: float = Field(0.5, gt=0, le=1, json_schema_extra={"cli": False})
    """Stop a challenger that is behind after this fraction of examples (1 disables)."""
    permutations: int = Field(10000, ge=100, json_schema_extra={"cli": False})
    """Sign flips of the paired permutation test (continuous scores)."""
    seed: int = Field(0, json_schema_extra={"cli": False})
    """Seed of the permutation test and the bootstrap (the run's seed)."""
    margin: float = Field(0.02, ge=0, json_schema_extra={"cli": False})
    """Largest loss a cheaper challenger (a distilled harness and adapter) may show: it is accepted when significantly not
    worse by this much and cheaper in model calls per example."""

    def non_inferiority(self) -> GateConfig:
        """This gate for a change that must be cheaper, not better: tau = -margin."""
        return self.model_copy(update={"tau": -self.margin})


@dataclass(frozen=True)
class Verdict:
    accept: bool
    delta: float
    ci: tuple[float, float]
    p_value: float
    n: int
    n_total: int
    method: str
    stopped_early: bool = False
    reason: str = ""
    alpha: float | None = None
    """The level this gate tested at (its share of the run's alpha); None for a change refused before any gate."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci"] = list(self.ci)
        return d


def _paired_p(diffs: np.ndarray, binary: bool, config: GateConfig) -> tuple[float, str]:
    if binary:
        wins, losses = int((diffs > 0).sum()), int((diffs < 0).sum())
        if wins + losses == 0:
            return 1.0, "exact McNemar"
        return float(bdtrc(wins - 1, wins + losses, 0.5)), "exact McNemar"  # P(X >= wins), X ~ Bin(wins + losses, 1/2)
    return sign_flip_p(diffs, config.seed, config.permutations), "paired permutation"


def compare(champion: dict[str, float], challenger: dict[str, float], *, binary: bool,
            config: GateConfig | None = None, ci: bool = True) -> Verdict:
    """Paired verdict on the examples both have scores for (`ci=False`: without the bootstrap interval, for speed)."""
    config = config or GateConfig()
    ids = sorted(champion.keys() & challenger.keys())
    diffs = np.fromiter((challenger[i] - champion[i] for i in ids), dtype=float, count=len(ids))
    if len(ids) == 0:
        return Verdict(False, 0.0, (0.0, 0.0), 1.0, 0, len(champion), "none", reason="no paired examples")
    delta = float(diffs.mean())
    if config.tau < 0:  # non-inferiority: is the challenger better than champion - margin?
        p, method = _paired_p(diffs - config.tau, False, config)
        method = f"non-inferiority (margin {-config.tau}), {method}"
    else:
        p, method = _paired_p(diffs, binary, config)
    accept = delta >= config.tau and p < config.alpha
    if accept:
        reason = f"gain {delta:+.3f} >= tau {config.tau} and p {p:.4f} < alpha {config.alpha}"
    elif delta < config.tau:
        reason = f"gain {delta:+.3f} below tau {config.tau}"
    else:
        reason = f"gain {delta:+.3f} not significant (p {p:.4f} >= alpha {config.alpha})"
    interval = bootstrap_ci(diffs.tolist(), seed=config.seed) if ci else (float("nan"), float("nan"))
    return Verdict(accept, delta, interval, p, len(ids), len(champion), method, reason=reason)


def decided(champion: dict[str, float], partial: dict[str, float], *, binary: bool, config: GateConfig | None = None,
            lo: float = 0.0, hi: float = 1.0, ci: bool = True) -> Verdict | None:
    """The final verdict if it is already fixed by the examples seen so far, else None.

    `champion` holds scores on every gate example; `partial` the challenger's so
    far. Scores are bounded by [lo, hi].
    """
    config = config or GateConfig()
    remaining = [i for i in champion if i not in partial]
    if not remaining:
        return compare(champion, partial, binary=binary, config=config, ci=ci)
    worst = compare(champion, {**partial, **{i: lo for i in remaining}}, binary=binary, config=config, ci=False)
    best = compare(champion, {**partial, **{i: hi for i in remaining}}, binary=binary, config=config, ci=False)
    now = compare(champion, partial, binary=binary, config=config, ci=ci)
    seen = len(partial) / len(champion)
    if worst.accept:
        why = f"accepted after {len(partial)}/{len(champion)}: even scoring {lo} on the rest would pass ({now.reason})"
        return Verdict(True, now.delta, now.ci, now.p_value, now.n, len(champion), now.method, True, why)
    planned = config.looks is None or len(partial) % config.chunk == 0
    if planned and now.delta >= config.tau and now.p_value < config.interim_alpha:
        why = (f"accepted after {len(partial)}/{len(champion)}: p {now.p_value:.2g} below the interim boundary "
               f"{config.interim_alpha} ({now.reason})")
        return Verdict(True, now.delta, now.ci, now.p_value, now.n, len(champion), now.method, True, why)
    if not best.accept:
        why = f"rejected after {len(partial)}/{len(champion)}: even scoring {hi} on the rest would fail ({now.reason})"
        return Verdict(False, now.delta, now.ci, now.p_value, now.n, len(champion), now.method, True, why)
    if seen >= config.futility_after and now.delta < min(0.0, config.tau):
        why = f"rejected for futility after {len(partial)}/{len(champion)}: behind the champion ({now.delta:+.3f})"
        return Verdict(False, now.delta, now.ci, now.p_value, now.n, len(champion), now.method, True, why)
    return None
