"""What a weight update adds on top of the builtin agent's best harness edit, when it gets the time it asks for.

The ablation's "both" arm gives the weights whatever the budget leaves after the harness edits. This bench asks the
question before the budget does: the builtin agent's first harness edit (on a labelled task, label scoring) is made and
gated, then one ce update with the given settings trains on that champion's own prompts and is gated, then the run
stops. The budget is large enough that nothing is shrunk or cut. Everything else is `sia run`'s own loop (gate,
test, store), so the printed seconds are what the same update costs inside a run.

    python bench/weights_on_champion.py --task lawbench-topics --examples 128 --epochs 2 --out bench/results/weights-on-champion

Prints and writes (`<out>/<task>-seed<seed>.json`): validation and held-out test of the baseline, of the harness
champion and of the champion with the adapter, the paired test difference of the last two (as the gate computes it), and the
update's collection and training seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class HarnessThenWeights:
    """Generation 1: the builtin agent's best harness edit. Generation 2: one ce update with fixed settings. Then stop."""

    name = "scripted-harness-then-weights"

    def __init__(self, settings: dict) -> None:
        from sia.agents.builtin import BuiltinFeedbackAgent

        self.builtin, self.settings = BuiltinFeedbackAgent(), settings

    def decide(self, state):
        from sia.agents.contract import Decision
        from sia.agents.proposal import HarnessEdit, Stop, WeightUpdate

        if state.generation == 1:
            d = self.builtin.decide(state)
            if not isinstance(d.proposal, HarnessEdit):
                return Decision(Stop(f"the builtin agent proposed no harness edit first ({type(d.proposal).__name__})"))
            return d
        if state.generation == 2:
            return Decision(WeightUpdate(algorithm="ce", config=dict(self.settings), rationale="ce on the champion's prompts",
                                         kind="ce"))
        return Decision(Stop("measured"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="lawbench-topics")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", default="90m", help="large enough that the update is not shrunk (the run stops after it)")
    ap.add_argument("--examples", type=int, default=128)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "weights-on-champion")
    args = ap.parse_args()
    from sia.loop.config import from_flat
    from sia.loop.gate import compare
    from sia.loop.loop import Loop
    from sia.policy.runtime import PolicyRuntime
    from sia.store.run import Run
    from sia.store.store import Store
    from sia.task.loading import load_task
    from sia.weights.config import LABEL_PRESET

    settings = {**LABEL_PRESET, "examples": args.examples, "epochs": args.epochs, "lr": args.lr}
    config = from_flat(task=args.task, budget=args.budget, levers="harness,weights", seed=args.seed, max_generations=3)
    run_dir = args.out / f"{args.task}-seed{args.seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    task = load_task(args.task)
    t0 = time.monotonic()
    with Store(run_dir) as store:
        store.set_meta("run_config", config.model_dump(mode="json"))
        store.set_meta("task", {"name": task.name, "folder": str(task.folder)})
        run = Run(store, task)
        with PolicyRuntime.local() as runtime:
            loop = Loop(run, runtime, config, agent=HarnessThenWeights(settings),
                        observer=lambda kind, **d: print(f"  {kind}: {d.get('text', '')}", flush=True) if kind == "phase" else None)
            summary = loop.run()
            gens = summary["generations"]
            versions = {"baseline": run.baseline(), **{name: g["candidate"] for name, g in zip(("harness", "harness+weights"), gens)}}
            for name, cid in versions.items():  # the loop tests only the final champion: the others are tested here
                if run.score(cid, "test") is None:
                    print(f"  test of {name} ({cid}), for the comparison", flush=True)
                    loop._eval(cid, "test", "test", loop.test, f"test {name}")
        rows = {name: {"candidate": cid, "adapter": run.adapter(cid), "val": run.scored(cid, "val"), "test": run.scored(cid, "test"),
                       "test_scores": run.scores_of(cid, "test")} for name, cid in versions.items()}
    result = {"task": args.task, "seed": args.seed, "settings": settings, "seconds": round(time.monotonic() - t0, 1),
              "generations": gens, "versions": rows}
    print(f"\n{args.task}, seed {args.seed}: ce {settings}")
    print(f"{'version':18s} {'val':>7s} {'test':>7s}")
    for name, r in rows.items():
        print(f"{name:18s} {r['val'].get('score', float('nan')):7.3f} {r['test'].get('score', float('nan')):7.3f}")
    for g in gens:
        print(f"gen {g['generation']} {g.get('kind')}: {'accepted' if g['accepted'] else 'rejected'} {g['reason']}")
    if "harness+weights" in rows:
        a, b = rows["harness"]["test_scores"], rows["harness+weights"]["test_scores"]
        v = compare(a, b, binary=set(a.values()) | set(b.values()) <= {0.0, 1.0})
        result["paired"] = {"delta": v.delta, "p_value": v.p_value, "method": v.method, "n": v.n}
        print(f"harness+weights vs harness on test: delta {v.delta:+.3f}, one-sided p {v.p_value:.4g} ({v.method}, n {v.n})")
    path = args.out / f"{args.task}-seed{args.seed}.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
