"""What the harness can still add once the weights are trained: builtin harness edits scored with one adapter, side by side.

Each variant is the task's starting harness with one edit of the builtin agent's space applied (label scoring, an
ensemble of instruction phrasings, another phrasing), rendered by sia's template. All run on the same split with the
same adapter; each is compared with the starting harness, paired per example (the gate's test).

    python bench/harness_on_adapter.py --task sentiment --adapter RUN/adapters/a1 --out bench/results/harness-on-adapter/unrecorded
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def variants(task) -> dict:
    """name -> (what it is, TemplateConfig): the starting harness and one builtin edit each."""
    from sia.agents.builtin_edits import INSTRUCTION_VARIANTS
    from sia.agents.meta import initial_harness
    from sia.harness.template import read_config

    cfg = read_config(initial_harness(task)[0])
    if cfg is None or not cfg.labels:
        raise SystemExit(f"{task.name}: its starting harness is not a labelled template harness")
    base = task.public_info().get("instruction") or task.spec.description
    phrasings = tuple(x for x in (v.format(instruction=base, labels=", ".join(cfg.labels)) for v in INSTRUCTION_VARIANTS)
                      if x != cfg.instruction)
    score = replace(cfg, mode="score")
    return {"gen": ("the starting harness (generates, reads the first label)", cfg),
            "score": ("label scoring by log-likelihood", score),
            "score_ens": (f"label scoring averaged over {len(phrasings) + 1} phrasings (ensemble)", replace(score, ensemble=phrasings)),
            "gen_other": ("generation with another phrasing of the instruction", replace(cfg, instruction=phrasings[0]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="sentiment")
    ap.add_argument("--adapter", type=Path, required=True, help="a PEFT LoRA adapter folder (a run's adapters/aN)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--out", type=Path, required=True, help="directory for the eval runs and table.json")
    args = ap.parse_args()
    from sia import api
    from sia.harness.template import render
    from sia.loop.gate import compare
    from sia.task.loading import load_task

    task = load_task(args.task)
    binary = task.spec.score == "binary"
    args.out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name, (what, cfg) in variants(task).items():
        harness = args.out / f"{name}.harness.py"
        harness.write_text(render(cfg))
        r = api.evaluate(task, harness=harness, split=args.split, adapter=args.adapter, run_dir=args.out / name)
        harness.unlink()
        rows[name] = {"what": what, "score": r.score, "n": r.n, "per_example": r.per_example}
        print(f"{name}: {r.score:.3f} (n {r.n})", flush=True)
    print(f"\n{args.task} {args.split}, adapter {args.adapter}")
    print(f"{'variant':10s} {'score':>6s}  against gen (paired)  what")
    for name, row in rows.items():
        against = "-"
        if name != "gen":
            v = compare(rows["gen"]["per_example"], row["per_example"], binary=binary)
            row["against_gen"] = {"delta": v.delta, "p_value": v.p_value, "method": v.method}
            against = f"{v.delta:+.3f}, p {v.p_value:.2f}"
        print(f"{name:10s} {row['score']:6.3f}  {against:20s}  {row['what']}")
    (args.out / "table.json").write_text(json.dumps({"task": args.task, "split": args.split, "adapter": str(args.adapter),
                                                     "variants": rows}, indent=1))


if __name__ == "__main__":
    main()
