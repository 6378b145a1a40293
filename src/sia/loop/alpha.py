"""Error control across a run: each gate tests at its own level, and the levels of a run's gates add up to alpha.

A run makes 5 to 20 gated attempts. Each gate at alpha = 0.05 leaves, over a
run, a much higher chance that at least one accepted change was noise (several
times alpha over 10 attempts whose challengers equal the champion, as
`bench/alpha_scope.py` measures).
With `--alpha-scope run` (the default) the gates share alpha by the online
fallback procedure (Tian & Ramdas, "Online control of the familywise error
rate", 2021): attempt i tests at

    alpha_i = alpha * gamma_i + (alpha_{i-1} if attempt i-1 was accepted, else 0),

with gamma_i = 1 / (i (i + 1)), which sums to 1. It controls the run-wide
false-accept rate (the familywise error rate over the run's attempts) at alpha
under any dependence between the attempts, and an accepted change passes its
level on, so a run that keeps finding real gains keeps its power. Why this rule
and not the others: alpha-investing and LORD++ control the false discovery
rate, a weaker promise than "no accepted change was noise", and plain
Bonferroni over `--max-generations` spends alpha on attempts most runs never
make.

Each gate keeps its sequential looks and pays for them out of its level: with
k planned interim looks (one per `chunk` examples), each look accepts only below
min(interim_alpha, level / (10 k)) and the final test keeps the rest, so by the
union bound a gate's false-accept rate is at most its level however the looks
fall (`gate_for`). With `--alpha-scope gate` each gate tests at alpha as before
(Haybittle-Peto looks), and the run-wide rate is measured, not bounded:
`tests/test_alpha.py` and `bench/alpha_scope.py` simulate both.

Simplification on purpose: an attempt refused before its gate (it does not
compile, its smoke test fails) spends nothing: it was never tested.
"""

from __future__ import annotations

import math

from sia.loop.gate import GateConfig


def gamma(attempt: int) -> float:
    """The share of alpha attempt `attempt` (1, 2, ...) gets of its own."""
    return 1.0 / (attempt * (attempt + 1))


def levels(accepted: list[bool], alpha: float) -> list[float]:
    """The level of each attempt so far and of the next: `accepted[i]` is whether attempt i + 1 was accepted."""
    out: list[float] = []
    for i in range(len(accepted) + 1):
        level = alpha * gamma(i + 1) + (out[i - 1] if i and accepted[i - 1] else 0.0)
        out.append(level)
    return out


def next_level(accepted: list[bool], alpha: float, scope: str) -> float:
    """The level of the next gate: alpha itself with scope "gate", its online-fallback share with scope "run"."""
    return alpha if scope == "gate" else levels(accepted, alpha)[-1]


def guarantee(scope: str, alpha: float, spent: list[float]) -> str:
    """What held over a run, in one sentence for the report and `sia status`."""
    if scope == "gate":
        return (f"each gate tested at alpha {alpha:g}; over the run's {len(spent)} gated attempts the chance that some accepted "
                "change was noise is not controlled (--alpha-scope run controls it)")
    if not spent:
        return f"run-wide false-accept rate at most {alpha:g} (online fallback; no gated attempt yet)"
    return (f"run-wide false-accept rate at most {alpha:g} (online fallback over {len(spent)} gated attempt"
            f"{'s' if len(spent) > 1 else ''}, at levels " + ", ".join(f"{x:.2g}" for x in spent) + ")")


def gate_for(config: GateConfig, accepted: list[bool], n: int) -> tuple[GateConfig, float]:
    """The gate the next attempt faces on `n` validation examples, and its level: with scope "gate" `config` itself;
    with scope "run" its share of alpha, the interim looks paid for out of it (`GateConfig.looks`)."""
    level = next_level(accepted, config.alpha, config.alpha_scope)
    if config.alpha_scope == "gate":
        return config, level
    looks = max(0, math.ceil(n / max(1, config.chunk)) - 1)
    interim = min(config.interim_alpha, level / (10 * max(1, looks)))
    return config.model_copy(update={"alpha": level - looks * interim, "interim_alpha": interim, "looks": looks}), level
