"""Rollouts per second on sentiment val with the bubblewrap sandbox against the plain process sandbox, in one run.

Both run the template harness (free generation) through the same policy
service at the same concurrency, on the same examples, alternating the two
sandboxes over several rounds so that machine noise hits both alike. Printed:
rollouts/s per sandbox (median of rounds) and the cost of bubblewrap relative
to the process sandbox. The benchmark measures; it asserts nothing.

    python bench/sandbox_overhead.py [--examples 96] [--concurrency 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=96)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    from sia.agents.meta import initial_harness
    from sia.evaluation.executor import EvalConfig, execute
    from sia.harness.isolation import detect
    from sia.harness.sandbox import SandboxLimits
    from sia.policy.runtime import PolicyRuntime
    from sia.store.store import Store
    from sia.task.loading import load_task

    kinds = ["process", "bwrap"] if detect().kernel else ["process"]
    if len(kinds) == 1:
        print(f"bubblewrap cannot run here ({detect().note}); only the process sandbox is measured")
    task = load_task("sentiment")
    source, _ = initial_harness(task)
    examples = task.split("val")[: args.examples]
    rates: dict[str, list[float]] = {k: [] for k in kinds}
    with PolicyRuntime.local() as runtime, tempfile.TemporaryDirectory() as tmp:
        with Store(f"{tmp}/warm") as store:  # load the model's kernels once before timing
            execute(task, source, store=store, runtime=runtime, examples=examples[:8],
                    config=EvalConfig(split="val", concurrency=args.concurrency))
        for r in range(args.rounds):
            for kind in (kinds if r % 2 == 0 else kinds[::-1]):
                config = EvalConfig(split="val", concurrency=args.concurrency, limits=SandboxLimits(isolation=kind))
                with Store(f"{tmp}/{kind}-{r}") as store:
                    t0 = time.monotonic()
                    result = execute(task, source, store=store, runtime=runtime, config=config, examples=examples)
                    rates[kind].append(len(examples) / (time.monotonic() - t0))
                    errors = sum(v for k, v in result.failures.items() if k != "wrong")
                print(
                    f"  round {r + 1} {kind:8s} {rates[kind][-1]:6.2f} rollouts/s (score {result.score:.3f}, errors {errors})", flush=True
                )
    print(f"\nsentiment val, {len(examples)} rollouts, template harness, concurrency {args.concurrency}, {args.rounds} rounds")
    print(f"{'sandbox':<10}{'rollouts/s (median)':>22}{'all rounds':>30}")
    for kind in kinds:
        print(f"{kind:<10}{statistics.median(rates[kind]):>22.2f}{'  '.join(f'{x:.2f}' for x in rates[kind]):>30}")
    if len(kinds) == 2:
        ratio = statistics.median(rates["bwrap"]) / statistics.median(rates["process"])
        print(f"\nbubblewrap / process: {ratio:.3f} (cost {100 * (1 - ratio):+.1f}%)")


if __name__ == "__main__":
    main()
