"""Public helpers for magic-denoise harnesses (given as ctx.task["files"], with denoise.py).

- `baseline(example)`: MAGIC's default settings;
- `check(example, output, seed)`: self-supervised MCV on the counts the harness
  was given: it splits them again with its own seed, denoises one half with
  the output (settings, or a program defining `denoise(counts)`) and scores
  the improvement on the other half, as the grader does on its hidden half;
- `neighbours(example, output)`: settings around a proposal, for a search;
- `describe(example)`: the matrix in numbers and the settings it takes.
"""

import json

import denoise
import numpy as np


def baseline(example):
    return dict(denoise.DEFAULTS)


def describe(example):
    x = np.asarray(example["counts"])
    lib = x.sum(1)
    return (f"A count matrix of {x.shape[0]} cells x {x.shape[1]} genes; median {int(np.median(lib))} molecules per cell, "
            f"{(x == 0).mean():.0%} zeros. Choose denoising settings as one JSON object with keys "
            f"{', '.join(denoise.DEFAULTS)}; defaults {json.dumps(denoise.DEFAULTS)}; method is magic or none, "
            "normalise is sqrt, log or none, t may be \"auto\".")


def run(output, counts):
    """The denoised matrix for an output: settings (a dict) or a program (text defining denoise(counts))."""
    if isinstance(output, str):
        namespace = {"__name__": "candidate"}
        exec(compile(output, "candidate.py", "exec"), namespace)
        y = np.asarray(namespace["denoise"](np.asarray(counts)), dtype=float)
        if y.shape != np.asarray(counts).shape:
            raise ValueError(f"denoise returned shape {y.shape}, expected {np.asarray(counts).shape}")
        return y
    return denoise.apply(denoise.settings_of(output), counts)


def check(example, output, seed=0):
    """{"ok", "error", "score"}: the output's MCV improvement on a split of the visible counts."""
    seen, held = denoise.split(example["counts"], 1000003 * (seed + 1))
    try:
        y = run(output, seen)
    except Exception as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}", "score": 0.0}
    score, loss, base = denoise.improvement(seen, y, held)
    return {"ok": True, "error": "", "score": score}


def neighbours(example, output):
    """Settings one step away from `output` in each parameter."""
    try:
        s = denoise.settings_of(output)
    except ValueError:
        s = dict(denoise.DEFAULTS)
    out = []
    t = s["t"] if s["t"] != "auto" else 3
    for key, values in (("knn", (3, 5, 10, 15)), ("t", (1, 2, 3, 4, 6, 8)), ("decay", (1, 5, 15, 40)), ("n_pca", (20, 50, 100))):
        for v in values:
            if v != (t if key == "t" else s[key]):
                out.append({**s, key: v})
    out += [{**s, "normalise": n} for n in ("sqrt", "log") if n != s["normalise"]]
    return out
