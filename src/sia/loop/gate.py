"""The gate: keep a challenger only if it beats the champion by at least tau, significantly.

Champion and challenger are compared on the same validation examples with the
same seeds, so the test is paired:

- binary scores: exact one-sided McNemar test (a binomial test on the
  discordant pairs);
- continuous scores: one-sided paired permutation test (random sign flips of
  the per-example differences, seeded).

The delta's 95% CI is a seeded paired bootstrap. Accept iff delta >= tau and
p < alpha.

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
rate essentially at alpha). A futility rule also stops a
challenger that is behind the champion after half of the examples; it can only
turn an accept into a reject, never the reverse, so it does not raise the
false-accept rate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.stats import binom


class GateConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)
    tau: float = Field(0.01, ge=0)
    """Smallest gain the gate accepts, in the task's score units (absolute)."""
    alpha: float = Field(0.05, gt=0, le=0.5)
    """Significance level of the gate's one-sided paired test."""
    chunk: int = Field(40, ge=1)
    """Validation examples evaluated between two sequential looks of the gate."""
    interim_alpha: float = Field(0.001, gt=0, le=0.5, json_schema_extra={"cli": False})
    """Accept at an interim look only below this p-value (Haybittle-Peto)."""
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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci"] = list(self.ci)
        return d


def _paired_p(diffs: np.ndarray, binary: bool, config: GateConfig) -> tuple[float, str]:
    if binary:
        wins, losses = int((diffs > 0).sum()), int((diffs < 0).sum())
        if wins + losses == 0:
            return 1.0, "exact McNemar"
        return float(binom.sf(wins - 1, wins + losses, 0.5)), "exact McNemar"
    if not np.any(diffs):
        return 1.0, "paired permutation"
    rng = np.random.default_rng(config.seed)
    signs = rng.choice([-1.0, 1.0], size=(config.permutations, len(diffs)))
    null = (signs * np.abs(diffs)).mean(axis=1)
    return float((1 + np.sum(null >= diffs.mean() - 1e-12)) / (1 + config.permutations)), "paired permutation"


def _bootstrap_ci(diffs: np.ndarray, seed: int, resamples: int = 2000) -> tuple[float, float]:
    if len(diffs) == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), size=(resamples, len(diffs)))].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return (float(lo), float(hi))


def compare(champion: dict[str, float], challenger: dict[str, float], *, binary: bool,
            config: GateConfig | None = None) -> Verdict:
    """Paired verdict on the examples both have scores for."""
    config = config or GateConfig()
    ids = sorted(set(champion) & set(challenger))
    diffs = np.array([challenger[i] - champion[i] for i in ids], dtype=float)
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
    return Verdict(accept, delta, _bootstrap_ci(diffs, config.seed), p, len(ids), len(champion), method, reason=reason)


def decided(champion: dict[str, float], partial: dict[str, float], *, binary: bool, config: GateConfig | None = None,
            lo: float = 0.0, hi: float = 1.0) -> Verdict | None:
    """The final verdict if it is already fixed by the examples seen so far, else None.

    `champion` holds scores on every gate example; `partial` the challenger's so
    far. Scores are bounded by [lo, hi].
    """
    config = config or GateConfig()
    remaining = [i for i in champion if i not in partial]
    if not remaining:
        return compare(champion, partial, binary=binary, config=config)
    worst = compare(champion, {**partial, **{i: lo for i in remaining}}, binary=binary, config=config)
    best = compare(champion, {**partial, **{i: hi for i in remaining}}, binary=binary, config=config)
    now = compare(champion, partial, binary=binary, config=config)
    seen = len(partial) / len(champion)
    if worst.accept:
        why = f"accepted after {len(partial)}/{len(champion)}: even scoring {lo} on the rest would pass ({now.reason})"
        return Verdict(True, now.delta, now.ci, now.p_value, now.n, len(champion), now.method, True, why)
    if now.delta >= config.tau and now.p_value < config.interim_alpha:
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
