"""The gate: paired, exact for binary scores, permutation for continuous ones, sequential."""

import random

import pytest

from sia.loop.gate import GateConfig, compare, decided


def _scores(values, prefix="x"):
    return {f"{prefix}{i}": float(v) for i, v in enumerate(values)}


def test_identical_challenger_is_rejected():
    rng = random.Random(0)
    champ = _scores(rng.random() < 0.6 for _ in range(200))
    v = compare(champ, dict(champ), binary=True)
    assert not v.accept and v.delta == 0 and v.p_value == 1.0


def test_worse_challenger_is_rejected():
    rng = random.Random(1)
    champ = _scores(rng.random() < 0.7 for _ in range(200))
    worse = {k: (0.0 if rng.random() < 0.3 else v) for k, v in champ.items()}
    v = compare(champ, worse, binary=True)
    assert not v.accept and v.delta < 0


def test_clearly_better_challenger_is_accepted_with_exact_p_value():
    champ = _scores([0] * 40 + [1] * 60)
    better = dict(champ)
    for i in range(25):  # 25 wins, 0 losses
        better[f"x{i}"] = 1.0
    v = compare(champ, better, binary=True)
    assert v.accept and v.delta == pytest.approx(0.25)
    assert v.p_value == pytest.approx(0.5 ** 25)  # exact McNemar: all 25 discordant pairs favour the challenger
    assert v.ci[0] > 0


def test_small_gain_below_tau_is_rejected_even_if_significant():
    champ = _scores([0] * 1000)
    better = dict(champ)
    for i in range(8):
        better[f"x{i}"] = 1.0
    v = compare(champ, better, binary=True, config=GateConfig(tau=0.01))
    assert v.p_value < 0.05 and v.delta < 0.01 and not v.accept


def test_continuous_scores_use_a_paired_permutation_test():
    rng = random.Random(2)
    champ = _scores(rng.random() * 0.5 for _ in range(80))
    better = {k: min(1.0, v + 0.1 + rng.random() * 0.05) for k, v in champ.items()}
    v = compare(champ, better, binary=False)
    assert v.method == "paired permutation" and v.accept and v.p_value < 0.001
    same = compare(champ, dict(champ), binary=False)
    assert not same.accept


def test_sequential_gate_stops_early_when_decided():
    champ = _scores([0] * 100 + [1] * 100)
    # a challenger that wins on every example the champion failed: accepted after the first chunk (interim boundary)
    partial = {f"x{i}": 1.0 for i in range(40)}
    v = decided(champ, partial, binary=True)
    assert v is not None and v.accept and v.stopped_early and v.n == 40
    # a challenger that loses every example the champion got right: rejected early, without seeing the rest
    partial = {f"x{i}": 0.0 for i in range(100, 200)}
    v = decided(champ, partial, binary=True)
    assert v is not None and not v.accept and v.stopped_early
    # undecided after a few mixed examples
    assert decided(champ, {"x0": 1.0, "x100": 0.0}, binary=True) is None


def test_early_decision_agrees_with_the_full_test():
    rng = random.Random(3)
    champ = _scores(rng.random() < 0.5 for _ in range(200))
    chal = {k: (1.0 if rng.random() < 0.8 else 0.0) for k in champ}
    full = compare(champ, chal, binary=True)
    ids = list(champ)
    for n in range(40, 201, 40):
        v = decided(champ, {k: chal[k] for k in ids[:n]}, binary=True, config=GateConfig(futility_after=1.0))
        if v is not None:
            assert v.accept == full.accept
            break
    else:
        pytest.fail("never decided")


def test_a_cheaper_change_is_judged_for_non_inferiority_within_the_margin():
    """tau = -margin: a challenger that scores as the champion does passes, one worse by more than the margin fails, and the
    sequential look neither stops it for futility nor accepts it early when it is merely a little behind."""
    rng = random.Random(3)
    champ = {f"e{i}": float(rng.random() < 0.8) for i in range(200)}
    gate = GateConfig().non_inferiority()
    assert gate.tau == -0.02 and GateConfig().tau == 0.01
    same = compare(champ, dict(champ), binary=True, config=gate)
    assert same.accept and "non-inferiority" in same.method
    assert not compare(champ, dict(champ), binary=True).accept, "the same scores are no gain for an ordinary change"
    worse = dict(champ)
    for k in [k for k, v in champ.items() if v == 1.0][:16]:  # 8 points worse
        worse[k] = 0.0
    assert not compare(champ, worse, binary=True, config=gate).accept
    slightly = dict(champ)
    for k in [k for k, v in champ.items() if v == 1.0][:1]:
        slightly[k] = 0.0
    half = dict(list(slightly.items())[:120])
    assert decided(champ, half, binary=True, config=gate) is None or decided(champ, half, binary=True, config=gate).accept
