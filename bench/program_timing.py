"""Can a kernel game the TriMul timer? The honest public program against one with CPU-burning helpers, in one `sia eval`.

One harness returns, for each example, the public reference program on
sample 0 and the same program with helper processes on sample 1. The helpers
burn CPU from the moment the program loads, except while an input file of the
program's own call is in its folders (they poll), and the program stops them
(SIGSTOP) inside its kernel too: without fair timing they slow the reference
down while the reference is timed and leave the program's own calls alone,
so its speedup rises with no faster kernel. Both programs compute exactly the
reference's output.

`sia eval trimul --samples 2` runs both on the same examples in one run; the
table pairs them per example: the helpers' speedup over the honest one's
(1.00 when the timer is fair). The benchmark measures; it asserts nothing.

    python bench/program_timing.py [--limit 8] [--out bench/results/program-timing]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from record import commit as record_commit  # noqa: E402
from record import machine, results_dir, write_record  # noqa: E402

HARNESS = '''import os

HELPERS = """
import os, signal, time

_helpers = []


def _busy():
    # the program's own call has an input file in its folders: stay quiet while it runs, burn CPU otherwise
    for folder in ("/in", "/io"):
        try:
            if any(name.startswith("in") and name.endswith(".bin") for name in os.listdir(folder)):
                return False
        except OSError:
            pass
    return True


for _ in range(max(2, os.cpu_count() or 2)):
    pid = os.fork()
    if pid == 0:  # a helper: burn CPU whenever the program itself is not being timed
        while True:  # short bursts, so that a call of the program's own finds them quiet within 0.2 ms
            if _busy():
                end = time.perf_counter() + 0.0002
                while time.perf_counter() < end:
                    pass
            else:
                time.sleep(0.005)
    _helpers.append(pid)

"""
PAUSE = """

_honest = custom_kernel


def custom_kernel(data):
    for pid in _helpers:
        os.kill(pid, signal.SIGSTOP)
    try:
        return _honest(data)
    finally:
        for pid in _helpers:
            os.kill(pid, signal.SIGCONT)
"""


def solve(example, ctx):
    honest = ctx.task["files"]["reference.py"]
    return HELPERS + honest + PAUSE if ctx.sample % 2 else honest
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=8, help="val examples (each graded twice)")
    ap.add_argument("--out", type=Path, default=None, help="default: bench/results/program-timing/<commit>")
    args = ap.parse_args()
    out = args.out or results_dir("program-timing")
    out.mkdir(parents=True, exist_ok=True)
    commit = record_commit()
    with tempfile.TemporaryDirectory() as tmp:
        harness = Path(tmp) / "helpers_or_honest.py"
        harness.write_text(HARNESS)
        command = [str(Path(sys.executable).parent / "sia"), "eval", "trimul", "--harness", str(harness), "--samples", "2",
                   "--limit", str(args.limit), "--concurrency", "2", "--run-dir", f"{tmp}/run", "--json"]
        t0 = time.monotonic()
        r = subprocess.run(command, capture_output=True, text=True, timeout=3600)
        if r.returncode != 0:
            sys.exit(f"sia eval failed ({r.returncode}): {r.stderr[-2000:]}")
        from sia.store.store import Store

        with Store(f"{tmp}/run", write=False) as store:
            rows = store.rollouts()
    by = {(row.example_id, row.sample): row for row in rows}
    examples = sorted({row.example_id for row in rows})
    lines = [f"trimul val, {len(examples)} examples, sample 0 honest (the public reference), sample 1 the same with CPU-burning "
             f"helpers; one `sia eval` ({time.monotonic() - t0:.0f} s)",
             f"{'example':<12}{'honest':>9}{'helpers':>9}{'ratio':>8}  timing note (helpers)"]
    ratios = []
    for ex in examples:
        h, c = by[(ex, 0)], by[(ex, 1)]
        ratio = c.score / h.score if h.score > 0 else math.nan
        ratios.append(ratio)
        note = (c.feedback or "").split("(", 1)[-1][:150]
        lines.append(f"{ex:<12}{h.score:>9.3f}{c.score:>9.3f}{ratio:>8.3f}  {note}")
    finite = [x for x in ratios if math.isfinite(x)]
    geo = math.exp(statistics.mean(math.log(x) for x in finite)) if finite else math.nan
    within = sum(abs(x - 1) <= 0.10 for x in finite)
    honest_mean = statistics.mean(by[(e, 0)].score for e in examples)
    helpers_mean = statistics.mean(by[(e, 1)].score for e in examples)
    lines += ["", f"mean speedup: honest {honest_mean:.3f}, helpers {helpers_mean:.3f} (helpers/honest {helpers_mean / honest_mean:.3f})",
              f"per-example ratio helpers/honest: geometric mean {geo:.3f}, within 10% on {within} of {len(finite)}"]
    text = "\n".join(lines)
    print(text)
    meta = {"commit": commit, "command": " ".join(["python", "bench/program_timing.py", "--limit", str(args.limit)]),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(),
            "examples": {ex: {"honest": by[(ex, 0)].score, "helpers": by[(ex, 1)].score, "honest_note": by[(ex, 0)].feedback,
                              "helpers_note": by[(ex, 1)].feedback} for ex in examples},
            "honest_mean": honest_mean, "helpers_mean": helpers_mean, "ratio_geomean": geo, "within_10pct": within, "n": len(finite)}
    (out / "table.txt").write_text(text + "\n")
    (out / "result.json").write_text(json.dumps(meta, indent=1))
    write_record(out, limit=args.limit)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
