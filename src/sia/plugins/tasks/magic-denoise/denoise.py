"""Denoising settings applied to a count matrix, and the molecular cross-validation (MCV) loss that judges them.

Shared by the grader (on the held-out half it keeps) and the public helper
(on a split of the visible half a harness makes itself).

Settings (JSON): {"method": "magic" | "none", "knn": 5, "t": 3 or "auto",
"decay": 1, "n_pca": 50, "normalise": "sqrt" | "log" | "none"}. MAGIC (the
`magic-impute` package) runs on library-size-normalised counts under the
chosen transform; the result is mapped back to the input's count scale.

MCV (Batson, Royer and Webber, 2019): a cell's molecules are split in two by
binomial thinning; a denoiser sees one half and is scored on how well it
predicts the other. With an even split both halves have the same expected
counts, so the loss is the mean squared error between log1p(denoised) and
log1p(held-out half), and the score is the relative improvement over no
denoising (the visible half itself): (loss_none - loss) / loss_none.
"""

import warnings

import numpy as np

DEFAULTS = {"method": "magic", "knn": 5, "t": 3, "decay": 1, "n_pca": 50, "normalise": "sqrt"}
RANGES = {"knn": (1, 100), "t": (1, 30), "decay": (0.1, 100), "n_pca": (2, 200)}


def settings_of(output):
    """Checked settings from a JSON output (a dict), with defaults; ValueError saying what is wrong."""
    if not isinstance(output, dict):
        raise ValueError("the output is not a JSON object of settings")
    s = {**DEFAULTS, **output}
    unknown = sorted(set(s) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(DEFAULTS)}")
    if s["method"] not in ("magic", "none"):
        raise ValueError(f"method must be magic or none, not {s['method']!r}")
    if s["normalise"] not in ("sqrt", "log", "none"):
        raise ValueError(f"normalise must be sqrt, log or none, not {s['normalise']!r}")
    for key, (lo, hi) in RANGES.items():
        if key == "t" and s[key] == "auto":
            continue
        if isinstance(s[key], bool) or not isinstance(s[key], (int, float)) or not lo <= s[key] <= hi:
            raise ValueError(f"{key} must be a number from {lo} to {hi}, not {s[key]!r}")
    return s


def apply(settings, counts):
    """The denoised matrix (same shape and count scale as `counts`) for checked `settings`."""
    x = np.asarray(counts, dtype=float)
    if settings["method"] == "none":
        return x
    import magic

    lib = x.sum(1, keepdims=True)
    lib[lib == 0] = 1
    scale = np.median(lib)
    norm = x / lib * scale
    fwd, back = {"sqrt": (np.sqrt, np.square), "log": (np.log1p, np.expm1), "none": (lambda a: a, lambda a: a)}[settings["normalise"]]
    n_pca = int(min(settings["n_pca"], min(x.shape) - 1))
    op = magic.MAGIC(knn=int(min(settings["knn"], x.shape[0] - 1)), t=settings["t"], decay=settings["decay"], n_pca=n_pca,
                     verbose=0, random_state=0, n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MAGIC warns about genes with no molecules in a small example; they stay at zero
        smoothed = op.fit_transform(fwd(norm))
    return np.clip(back(np.asarray(smoothed)), 0, None) / scale * lib


def mcv_loss(denoised, held):
    return float(np.mean((np.log1p(np.clip(denoised, 0, None)) - np.log1p(np.asarray(held, dtype=float))) ** 2))


def improvement(visible, denoised, held):
    """(score, loss, loss without denoising)."""
    base = mcv_loss(visible, held)
    loss = mcv_loss(denoised, held)
    return (base - loss) / base if base > 0 else 0.0, loss, base


def split(counts, seed, p=0.5):
    """Binomial thinning: (half seen, half held out) of a count matrix."""
    x = np.asarray(counts, dtype=np.int64)
    a = np.random.default_rng(seed).binomial(x, p)
    return a, x - a
