"""Error control across a run, simulated: the run-wide false-accept rate under a null, and the power on a planted gain.

Each simulated run makes `--attempts` gated attempts on `--n` validation examples with binary scores, through sia's own
gate: `sia.loop.alpha.gate_for` gives each attempt its gate, and `sia.loop.gate.decided` looks after every chunk of
`--chunk` examples as the loop does. An example i has a difficulty p_i drawn uniformly from [0.1, 0.9]; the champion's
and a challenger's scores on it are independent Bernoulli(p_i) draws (a sampled policy: the pairs disagree often, the
hard case for a paired test). Under the null every challenger is drawn like the champion, so any accept is false; an
accepted challenger becomes the champion, as in a run. For power, one attempt's challenger (the first, the third or the
last) is drawn from Bernoulli(min(p_i + gain, 1)) instead.

Printed: per scope, the share of runs with any false accept (with a 95% Wilson interval) and, per position of the true
gain, the share of runs that accepted it. Written with its record under bench/results/alpha-scope/<commit>/.

    python bench/alpha_scope.py --runs 2000 --attempts 10 --n 200 --gain 0.05
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from sia.loop import alpha  # noqa: E402
from sia.loop.gate import GateConfig, decided  # noqa: E402


def gate_once(champion: dict[str, float], challenger: dict[str, float], config: GateConfig) -> bool:
    """The loop's sequential gate on a challenger whose scores are already drawn: a look after every chunk."""
    ids = list(champion)
    for seen in range(config.chunk, len(ids) + config.chunk, config.chunk):
        v = decided(champion, {i: challenger[i] for i in ids[:seen]}, binary=True, config=config, ci=False)
        if v is not None:
            return v.accept
    return False


def simulate_run(rng: np.random.Generator, scope: str, *, attempts: int = 10, n: int = 200, chunk: int = 40,
                 level: float = 0.05, gain: float = 0.0, gain_at: int | None = None) -> tuple[bool, bool]:
    """One run: (any attempt drawn under the null was accepted, the attempt with the true gain was accepted)."""
    p = rng.uniform(0.1, 0.9, size=n)
    ids = [f"v{i}" for i in range(n)]
    champion = dict(zip(ids, (rng.random(n) < p).astype(float)))
    config = GateConfig(alpha=level, alpha_scope=scope, chunk=chunk)
    accepted: list[bool] = []
    false_accept = true_accept = False
    for attempt in range(1, attempts + 1):
        planted = attempt == gain_at
        q = np.minimum(p + gain, 1.0) if planted else p
        challenger = dict(zip(ids, (rng.random(n) < q).astype(float)))
        gate, _ = alpha.gate_for(config, accepted, n)
        ok = gate_once(champion, challenger, gate)
        accepted.append(ok)
        if ok:
            champion = challenger
            if planted:
                true_accept = True
                p = q  # the new champion is the better policy
            else:
                false_accept = True
    return false_accept, true_accept


def wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    z, phat = 1.96, k / n
    centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--attempts", type=int, default=10)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--chunk", type=int, default=40)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--gain", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="Results folder (default bench/results/alpha-scope/<commit>).")
    a = ap.parse_args()
    from record import results_dir, write_record

    t0 = time.monotonic()
    rows = []
    print(f"{a.runs} simulated runs of {a.attempts} attempts, n={a.n}, chunks of {a.chunk}, alpha {a.alpha}, seed {a.seed}")
    print(f"{'scope':6} {'setting':28} {'rate':>6} {'95% CI':>15}")
    for scope in ("run", "gate"):
        rng = np.random.default_rng(a.seed)
        k = sum(simulate_run(rng, scope, attempts=a.attempts, n=a.n, chunk=a.chunk, level=a.alpha)[0] for _ in range(a.runs))
        lo, hi = wilson(k, a.runs)
        rows.append({"scope": scope, "setting": "null: any false accept", "rate": k / a.runs, "ci": [lo, hi], "runs": a.runs})
        print(f"{scope:6} {'null: any false accept':28} {k / a.runs:6.3f} ({lo:.3f}-{hi:.3f})", flush=True)
        for at in sorted({1, 3, a.attempts}):
            rng = np.random.default_rng(a.seed + at)
            k = sum(simulate_run(rng, scope, attempts=a.attempts, n=a.n, chunk=a.chunk, level=a.alpha, gain=a.gain, gain_at=at)[1]
                    for _ in range(a.runs))
            lo, hi = wilson(k, a.runs)
            setting = f"+{a.gain} gain at attempt {at}: accepted"
            rows.append({"scope": scope, "setting": setting, "rate": k / a.runs, "ci": [lo, hi], "runs": a.runs})
            print(f"{scope:6} {setting:28} {k / a.runs:6.3f} ({lo:.3f}-{hi:.3f})", flush=True)
    out = a.out or results_dir("alpha-scope")
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.json").write_text(json.dumps({"args": vars(a) | {"out": str(out)}, "rows": rows}, indent=1))
    write_record(out, seconds=time.monotonic() - t0)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
