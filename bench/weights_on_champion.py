"""What a weight update adds on top of the builtin agent's best harness edit, when it gets the time it asks for.

The ablation's "both" arm gives the weights whatever the budget leaves after the harness edits. This bench asks the
question before the budget does: the builtin agent's first harness edit (on a labelled task, label scoring) is made and
gated, then one ce update with the given settings trains on that champion's own prompts and is gated, then the run
stops. The budget is large enough that nothing is shrunk or cut. Everything else is `sia run`'s own loop (gate,
test, store), so the printed seconds are what the same update costs inside a run.

    python bench/weights_on_champion.py --task lawbench-topics --examples 128 --epochs 2 --out bench/results/weights-on-champion/unrecorded

Prints and writes (`<out>/<task>-seed<seed>.json`): validation and held-out test of the baseline, of the harness
champion and of the champion with the adapter, the paired test difference of the last two (as the gate computes it), and the
update's collection and training seconds.
"""

from __future__ import annotations

import argparse
import json
import os
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


def seconds(run, gens: list[dict]) -> dict:
    """Seconds of each generation's parts, from the store: its evaluations' first and last rollouts, and the rest (for a
    weight update: training) as the time between them."""
    store = run.store
    out = {}
    for g in gens:
        if not g["candidate"]:
            continue
        row = store.db.execute("SELECT started, finished FROM generations WHERE gen = ?", (g["generation"],)).fetchone()
        if row is None or row[1] is None:
            continue
        spans = store.db.execute(
            "SELECT e.split, e.candidate_id, MIN(r.created), MAX(r.created) FROM rollouts r JOIN evaluations e ON r.evaluation_id = e.id "
            "WHERE r.created BETWEEN ? AND ? GROUP BY e.id ORDER BY MIN(r.created)", row).fetchall()
        parts = {"total": round(row[1] - row[0], 1)}
        for split, cid, a, b in spans:
            key = "collect" if split == "train" and cid != g["candidate"] else "smoke" if split == "train" else "gate"
            parts[key] = round(parts.get(key, 0.0) + b - a, 1)
        parts["other (training, loading)"] = round(parts["total"] - sum(v for k, v in parts.items() if k != "total"), 1)
        out[g["generation"]] = parts
    return out


def paired(a: dict[str, float], b: dict[str, float]):
    """The gate's paired one-sided verdict of `b` against `a` on the examples both scored."""
    from sia.loop.gate import compare

    return compare(a, b, binary=set(a.values()) | set(b.values()) <= {0.0, 1.0})


def table(task: str, out: Path) -> None:
    from sia.evaluation.stats import mean_ci

    runs = [json.loads(p.read_text()) for p in sorted(out.glob(f"{task}-seed*.json"))]
    runs = [r for r in runs if "harness+weights" in r["versions"]]
    if not runs:
        raise SystemExit(f"no finished seed of {task} in {out}")
    pooled = {name: {f"{r['seed']}/{k}": v for r in runs for k, v in r["versions"][name]["test_scores"].items()}
              for name in ("baseline", "harness", "harness+weights")}
    print(f"{task}: {len(runs)} seed(s) ({', '.join(str(r['seed']) for r in runs)}), held-out test")
    print(f"{'version':18s} {'mean':>7s} {'95% CI':>15s} {'n':>5s}   per seed")
    for name, scores in pooled.items():
        m, (lo, hi) = mean_ci(list(scores.values()), binary=True)
        per = ", ".join(f"{r['versions'][name]['test'].get('score', float('nan')):.3f}" for r in runs)
        print(f"{name:18s} {m:7.3f} {lo:7.3f}-{hi:.3f} {len(scores):5d}   {per}")
    v = paired(pooled["harness"], pooled["harness+weights"])
    print(f"harness+weights vs harness: delta {v.delta:+.3f}, pooled paired one-sided p {v.p_value:.4g} ({v.method}, n {v.n})")
    for r in runs:
        for g, parts in r.get("parts_s", {}).items():
            print(f"seed {r['seed']} gen {g}: " + ", ".join(f"{k} {v:.0f} s" for k, v in parts.items()))

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="lawbench-topics")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", default="90m", help="large enough that the update is not shrunk (the run stops after it)")
    ap.add_argument("--examples", type=int, default=128)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="another weight-update setting of the ce (as a proposal's config sets it), e.g. negatives=7")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "weights-on-champion")
    ap.add_argument("--table", action="store_true", help="print the seeds written so far, pooled, and run nothing")
    args = ap.parse_args()
    if args.table:
        return table(args.task, args.out)
    from scripted import scripted_run

    from sia.loop.config import from_flat
    from sia.weights.config import LABEL_PRESET

    settings = {**LABEL_PRESET, "examples": args.examples, "epochs": args.epochs, "lr": args.lr}
    for item in args.set:
        key, _, value = item.partition("=")
        settings[key] = json.loads(value)
    config = from_flat(task=args.task, budget=args.budget, levers="harness,weights", seed=args.seed, max_generations=3)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with scripted_run(args.task, config, HarnessThenWeights(settings), args.out / f"{args.task}-seed{args.seed}") as (run, loop):
        gens = loop.run()["generations"]
        tried = [g for g in gens if g["candidate"]]
        if tried and not tried[0]["accepted"]:
            print("  the harness edit was rejected: the weight update trained on the baseline", flush=True)
        versions = {"baseline": run.baseline(), **{name: g["candidate"] for name, g in zip(("harness", "harness+weights"), tried)}}
        for name, cid in versions.items():  # the loop tests only the final champion: the others are tested here
            if run.score(cid, "test") is None:
                print(f"  test of {name} ({cid}), for the comparison", flush=True)
                loop._eval(cid, "test", "test", loop.test, f"test {name}")
        parts = seconds(run, gens)
        rows = {name: {"candidate": cid, "adapter": run.adapter(cid), "val": run.scored(cid, "val"), "test": run.scored(cid, "test"),
                       "test_scores": run.scores_of(cid, "test")} for name, cid in versions.items()}
    result = {"task": args.task, "seed": args.seed, "settings": settings, "seconds": round(time.monotonic() - t0, 1),
              "parts_s": parts, "generations": gens, "versions": rows}
    print(f"\n{args.task}, seed {args.seed}: ce {settings}")
    print(f"{'version':18s} {'val':>7s} {'test':>7s}")
    for name, r in rows.items():
        print(f"{name:18s} {r['val'].get('score', float('nan')):7.3f} {r['test'].get('score', float('nan')):7.3f}")
    for g in gens:
        print(f"gen {g['generation']} {g.get('kind')}: {'accepted' if g['accepted'] else 'rejected'} {g['reason']}")
        if g["generation"] in parts:
            print("  seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in parts[g["generation"]].items()))
    if "harness+weights" in rows:
        v = paired(rows["harness"]["test_scores"], rows["harness+weights"]["test_scores"])
        result["paired"] = {"delta": v.delta, "p_value": v.p_value, "method": v.method, "n": v.n}
        print(f"harness+weights vs harness on test: delta {v.delta:+.3f}, one-sided p {v.p_value:.4g} ({v.method}, n {v.n})")
    path = args.out / f"{args.task}-seed{args.seed}.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
