"""Do the two policy engines give the same answers? A task's split evaluated on HF/PyTorch and on llama.cpp.

The same harness (the task's default), the same adapter when one is given
(as the weight lever trains and serves it), the same seeds: one real
`sia eval` per engine, each in its own run directory. Printed: both scores,
the examples whose outputs differ (counted and listed), and throughput.

    python bench/engine_agreement.py --task sentiment --split val --adapter RUN_DIR/adapters/a1
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def outputs(task: str, split: str, limit: int | None, adapter: str | None, engine: str, run_dir: Path):
    from sia.api import evaluate
    from sia.store.store import Store

    result = evaluate(task, split=split, limit=limit, adapter=adapter, policy_backend=engine, run_dir=run_dir)
    with Store(run_dir) as store:
        rows = store.rollouts(result.evaluation_id)
    return result, {r.example_id: r.output for r in rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="sentiment")
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--adapter", default=None, help="a PEFT adapter folder, as in RUN_DIR/adapters/aN")
    ap.add_argument("--out", type=Path, default=None, help="write the counts as JSON here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sia-agreement-") as tmp:
        res = {e: outputs(args.task, args.split, args.limit, args.adapter, e, Path(tmp) / e) for e in ("hf", "llamacpp")}
    (hf, out_hf), (ll, out_ll) = res["hf"], res["llamacpp"]
    differ = sorted(k for k in out_hf if out_hf[k] != out_ll.get(k))
    print(f"\n{args.task} {args.split}, adapter {args.adapter or 'none'}: {len(out_hf)} examples")
    print(f"{'engine':10s}{'score':>8s}{'rollouts/s':>12s}")
    for name, r in (("hf", hf), ("llamacpp", ll)):
        print(f"{name:10s}{r.score:8.3f}{r.rollouts_per_s:12.2f}")
    print(f"outputs that differ: {len(differ)} of {len(out_hf)}")
    for k in differ[:20]:
        print(f"  {k}: hf {json.dumps(out_hf[k])[:60]}  llamacpp {json.dumps(out_ll.get(k))[:60]}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"task": args.task, "split": args.split, "adapter": args.adapter, "n": len(out_hf),
                                        "differ": differ, "score": {"hf": hf.score, "llamacpp": ll.score},
                                        "rollouts_per_s": {"hf": hf.rollouts_per_s, "llamacpp": ll.rollouts_per_s}}, indent=1))


if __name__ == "__main__":
    main()
