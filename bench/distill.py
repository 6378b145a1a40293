"""Distillation of a costly harness into the weights, measured: score and model calls per example, before and after.

The champion is sia's template harness made costly on purpose: label scoring with a calibration pass on a content-free
input, two model calls per example (with chat-turn demonstrations added as well, SmolLM2 answers one label to every
review here, so there would be nothing worth distilling). One generation distils it through the weight lever: the
champion answers 128 train examples as it always does, the adapter learns those answers from the same harness without
the calibration pass (ce), and the gate keeps the (student harness, adapter) pair only if it is no
worse than the champion within the gate's margin and makes fewer model calls per example. The Feedback-Agent is
scripted (distil, then stop) so that this one step is what is measured; everything else is `sia run`'s own loop.

    python bench/distill.py --task sentiment --budget 15m --out bench/results/distill/unrecorded

Prints and writes (`<out>/distill_<task>.json`) validation and held-out test scores, model calls per example and
seconds per example of the champion before and of the final champion after, with the gate's verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class DistilOnce:
    """Propose one distillation of the champion's template harness, then stop."""

    name = "scripted-distill"

    def decide(self, state):
        from sia.agents.builtin import distillation
        from sia.agents.contract import Decision
        from sia.agents.proposal import Stop, WeightUpdate
        from sia.harness.template import read_config, render

        if state.generation > 1:
            return Decision(Stop("the distillation was measured"))
        options = distillation(read_config(state.champion_source), state)
        if not options:
            return Decision(Stop("the champion is not costly enough to distil"))
        o = options[0]
        return Decision(WeightUpdate(algorithm="ce", config=dict(o.settings), data="distill", rationale=o.rationale,
                                     kind="distill", harness=render(o.harness)))


def costly_task(task_name: str, folder: Path) -> Path:
    """A copy of the task whose default harness scores labels and calibrates them with a second, content-free call."""
    from sia.harness.template import make_config, render
    from sia.task.loading import load_task

    task = load_task(task_name)
    shutil.copytree(task.folder, folder, dirs_exist_ok=True)
    cfg = make_config(task.public_info(), mode="score", calibrate=True)
    (folder / "costly_harness.py").write_text(render(cfg))
    toml = (folder / "task.toml").read_text()
    (folder / "task.toml").write_text(toml + '\n[harness]\ndefault = "costly_harness.py"\n')
    return folder


def measure(run, cid: str) -> dict:
    from sia.evaluation.analysis import calls_per_example

    store = run.store
    out = {"candidate": cid, "harness": store.candidate(cid).harness_version, "adapter": store.candidate(cid).adapter_version}
    for split in ("val", "test"):
        eid = store.evaluation_id(cid, split)
        rows = store.rollouts(eid) if eid else []
        out[split] = run.scored(cid, split)
        out[f"{split}_calls_per_example"] = round(calls_per_example(store, eid), 3) if eid else None
        out[f"{split}_seconds_per_example"] = round(run.seconds_of(cid, split)[0] / len(rows), 3) if rows else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="sentiment")
    ap.add_argument("--budget", default="15m")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "distill")
    args = ap.parse_args()
    from scripted import scripted_run

    from sia.loop.config import from_flat

    args.out.mkdir(parents=True, exist_ok=True)
    folder = costly_task(args.task, Path(tempfile.mkdtemp()) / args.task)
    config = from_flat(task=str(folder), budget=args.budget, levers="harness,weights", seed=args.seed, max_generations=2)
    t0 = time.monotonic()
    with scripted_run(str(folder), config, DistilOnce(), args.out / f"run-{args.task}-seed{args.seed}") as (run, loop):
        summary = loop.run()
        before, after = measure(run, run.baseline()), measure(run, run.store.champion())
    gens = summary["generations"]
    result = {"task": args.task, "budget": args.budget, "seed": args.seed, "seconds": round(time.monotonic() - t0, 1),
              "before": before, "after": after, "verdict": gens[0] if gens else None}
    print(f"\ndistillation on {args.task} (seed {args.seed}):")
    print(f"{'':8s} {'version':10s} {'val':>7s} {'test':>7s} {'calls/ex':>9s} {'s/ex (test)':>12s}")
    for name, m in (("before", before), ("after", after)):
        version = f"{m['harness']}+{m['adapter']}" if m["adapter"] else m["harness"]
        print(f"{name:8s} {version:10s} {m['val'].get('score', float('nan')):7.3f} {m['test'].get('score', float('nan')):7.3f} "
              f"{m['test_calls_per_example'] or 0:9.2f} {m['test_seconds_per_example'] or 0:12.3f}")
    if gens:
        g = gens[0]
        print(f"gate: {'accepted' if g['accepted'] else 'rejected'}: {g['reason']}")
    path = args.out / f"distill_{args.task}.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
