"""Error control across a run: the gates' levels, and the run-wide false-accept rate simulated through sia's own gate."""

import itertools
import sys

import numpy as np
import pytest
from conftest import ROOT

from sia.loop import alpha
from sia.loop.gate import GateConfig

sys.path.insert(0, str(ROOT / "bench"))
from alpha_scope import simulate_run, wilson  # noqa: E402


def test_levels_follow_the_online_fallback_rule():
    assert alpha.levels([], 0.05) == [0.025]
    # nothing accepted: alpha * 1/(i(i+1)), which never adds up to more than alpha however long the run
    spent = alpha.levels([False] * 99, 0.05)
    assert spent[:3] == pytest.approx([0.025, 0.05 / 6, 0.05 / 12]) and sum(spent) < 0.05
    # an accepted attempt passes its level on to the next
    assert alpha.levels([True], 0.05)[1] == pytest.approx(0.05 / 6 + 0.025)
    # a level passed on can add up over a run of accepts, but never past alpha
    for pattern in itertools.product([False, True], repeat=8):
        assert max(alpha.levels(list(pattern), 0.05)) <= 0.05 + 1e-12
    assert alpha.next_level([True, False], 0.05, "gate") == 0.05


def test_a_gate_pays_for_its_interim_looks_out_of_its_level():
    config = GateConfig(alpha=0.05, alpha_scope="run", chunk=40)
    gate, level = alpha.gate_for(config, [], 200)
    assert level == 0.025 and gate.looks == 4
    assert gate.alpha + gate.looks * gate.interim_alpha == pytest.approx(level)
    assert gate.interim_alpha <= config.interim_alpha
    same, level = alpha.gate_for(config.model_copy(update={"alpha_scope": "gate"}), [False, False], 200)
    assert level == 0.05 and same.alpha == 0.05 and same.looks is None


def test_the_run_wide_false_accept_rate_is_at_most_alpha_under_a_null():
    """1,000 simulated runs of 10 gated attempts whose challengers all equal the champion in distribution: with scope run
    the share of runs that accepted any change is at most alpha (within the simulation's error); with scope gate it is
    measured, several times alpha."""
    runs, rates = 1000, {}
    for scope in ("run", "gate"):
        rng = np.random.default_rng(7)
        k = sum(simulate_run(rng, scope, attempts=10, n=200, level=0.05)[0] for _ in range(runs))
        rates[scope] = (k / runs, wilson(k, runs))
    print(f"runs with any false accept over 10 attempts: run {rates['run']}, gate {rates['gate']}")
    assert rates["run"][1][0] <= 0.05, rates  # not significantly above alpha
    assert rates["gate"][1][0] > 0.05, rates  # the per-gate level leaves the run uncontrolled


def test_a_planted_gain_is_still_found_under_the_run_scope():
    rng = np.random.default_rng(11)
    found = sum(simulate_run(rng, "run", attempts=10, n=200, gain=0.15, gain_at=1)[1] for _ in range(100))
    assert found >= 80, found
