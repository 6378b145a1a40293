"""Confidence intervals for evaluation scores.

Scores are first averaged per example (over its samples), so the unit of
resampling is the example. Binary scores with one sample get a Wilson interval;
everything else a seeded percentile bootstrap.
"""

from __future__ import annotations

import math

import numpy as np


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_ci(values: list[float], level: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    if not values:
        return (0.0, 0.0)
    x = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return (float(lo), float(hi))


def mean_ci(per_example: list[float], binary: bool) -> tuple[float, tuple[float, float]]:
    """Mean of per-example scores and a 95% interval."""
    if not per_example:
        return 0.0, (0.0, 0.0)
    mean = float(np.mean(per_example))
    if binary and all(v in (0.0, 1.0) for v in per_example):
        return mean, wilson(sum(per_example), len(per_example))
    return mean, bootstrap_ci(per_example)
