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


def sign_flip_p(diffs: np.ndarray, seed: int, permutations: int = 10000, two_sided: bool = False) -> float:
    """Paired permutation p-value of mean(diffs) > 0 (or != 0 when `two_sided`): random sign flips, seeded."""
    if len(diffs) == 0 or not np.any(diffs):
        return 1.0
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(permutations, len(diffs)))
    null = (signs * np.abs(diffs)).mean(axis=1)
    observed = diffs.mean()
    extreme = np.abs(null) >= abs(observed) - 1e-12 if two_sided else null >= observed - 1e-12
    return float((1 + np.sum(extreme)) / (1 + permutations))


CELLS = ("h0,a0", "h,a0", "h0,a", "h,a")
"""The four cells of a 2x2 attribution: baseline harness h0 or final harness h, baseline adapter a0 or final adapter a."""


def factorial_2x2(cells: dict[str, dict[str, float]], seed: int = 0) -> dict[str, object]:
    """Each lever's effect and their interaction from per-example scores of the four cells, on the examples all four share.

    harness = (h,a0) - (h0,a0); weights = (h0,a) - (h0,a0); interaction = (h,a) - (h,a0) - (h0,a) + (h0,a0); so the
    total gain (h,a) - (h0,a0) is exactly their sum. Each comes with its mean, a 95% paired bootstrap interval over
    examples (the same resamples for all four, seeded) and a two-sided paired permutation p-value.
    """
    missing = [c for c in CELLS if c not in cells]
    if missing:
        raise ValueError(f"cells missing: {missing}")
    ids = sorted(set.intersection(*(set(cells[c]) for c in CELLS)))
    y = {c: np.array([cells[c][i] for i in ids], dtype=float) for c in CELLS}
    parts = {"harness": y["h,a0"] - y["h0,a0"], "weights": y["h0,a"] - y["h0,a0"],
             "interaction": y["h,a"] - y["h,a0"] - y["h0,a"] + y["h0,a0"], "total": y["h,a"] - y["h0,a0"]}
    effects = {name: {"mean": float(d.mean()) if len(d) else 0.0, "ci": list(bootstrap_ci(d.tolist(), seed=seed)),
                      "p_value": sign_flip_p(d, seed, two_sided=True)} for name, d in parts.items()}
    return {"n": len(ids), "cells": {c: float(y[c].mean()) if len(ids) else None for c in CELLS}, "effects": effects}
