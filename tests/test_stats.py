import pytest

from sia.evaluation.stats import bootstrap_ci, mean_ci, wilson


def test_wilson_interval_contains_the_estimate():
    lo, hi = wilson(30, 64)
    assert lo < 30 / 64 < hi
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0


def test_mean_ci_uses_bootstrap_for_continuous_scores():
    values = [0.2, 0.4, 0.6, 0.8] * 10
    mean, (lo, hi) = mean_ci(values, binary=False)
    assert mean == pytest.approx(0.5)
    assert lo < 0.5 < hi
    assert bootstrap_ci(values) == bootstrap_ci(values)  # seeded
