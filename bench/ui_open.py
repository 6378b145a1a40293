"""How fast `sia ui` opens a large run: 20 generations and 10,000 rollouts (each with a model call of 30 reply tokens and
their logprobs, and a grade), written through the store's own API (no model), then each view's request timed in one
process through FastAPI's test client, the best of `--repeats`.

    python bench/ui_open.py [--generations 20] [--rollouts 10000] [--out bench/results/ui-open/<commit>]

Prints a table (view, the first request's seconds and the best of the repeats, the first under the 1-second aim; the
first trajectory loads the tokenizer that shows reply tokens as text) and writes it with the command, commit and date.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from record import commit, write_record  # noqa: E402


def synthesize(run_dir: Path, generations: int, rollouts: int, seed: int = 0) -> None:
    """A finished sentiment run with `generations` gated harness edits (every third accepted) and about `rollouts` rollouts
    spread over their validation evaluations and train analyses."""
    from sia.harness.template import make_config, render
    from sia.loop.config import RunConfig
    from sia.store.records import NewRollout
    from sia.store.store import Store
    from sia.task.loading import load_task

    task = load_task("sentiment")
    rng = random.Random(seed)
    val, train = task.split("val"), task.split("train")
    per_eval = max(1, -(-rollouts // (2 * generations + 1)))
    with Store(run_dir) as store:
        store.set_meta("run_config", RunConfig(task="sentiment").model_dump(mode="json"))
        store.set_meta("task", {"name": task.name, "folder": str(task.folder)})
        store.set_meta("model", None)
        cfg = make_config(task.public_info())
        hv = store.add_harness_version(render(cfg), "baseline")
        champion = store.add_candidate(hv, None, "baseline", "baseline")
        store.push_champion(champion, "baseline", 0)

        def evaluate(cid: str, split: str, pool, purpose: str) -> str:
            """`per_eval` rollouts over `pool`, several samples of each example where the pool is smaller."""
            examples = [pool[k % len(pool)] for k in range(per_eval)]
            eid = store.add_evaluation(cid, split, 0, -(-per_eval // len(pool)), len(pool), {"purpose": f"{cid}:{purpose}"})
            for k, e in enumerate(examples):
                toks = [rng.randrange(1000, 40000) for _ in range(30)]
                score = float(rng.random() < 0.7)
                call = {"kind": "chat", "model": "base", "messages": [{"role": "user", "content": str(e.inputs)}],
                        "prompt_token_ids": list(range(80)),
                        "completions": [{"text": "positive", "token_ids": toks, "logprobs": [-rng.random() for _ in toks]}]}
                events = [{"kind": "llm_call", "data": call},
                          {"kind": "grade", "data": {"score": score, "passed": bool(score), "feedback": ""}}]
                store.add_rollout(NewRollout(f"{eid}-r{k}", eid, cid, e.id, split, k // len(pool), 0, "ok", None, None, "positive", score,
                                             bool(score), None, 0.1, events=events))
            return eid

        evaluate(champion, "val", val, "val")
        for gen in range(1, generations + 1):
            cfg = make_config(task.public_info(), mode="score" if gen % 2 else "generate", calibrate=gen % 3 == 0)
            source = render(cfg).replace('"""Harness', f'"""Generation {gen}: harness', 1)
            hv = store.add_harness_version(source, f"edit {gen}", parent=store.candidate(champion).harness_version)
            cid = store.add_candidate(hv, None, "harness", f"edit {gen}", parent=champion)
            store.add_generation(gen, champion, {"lever": "harness", "kind": f"edit{gen}", "rationale": f"edit {gen}"})
            evaluate(cid, "train", train, "train")
            veid = evaluate(cid, "val", val, "val")
            accept = gen % 3 == 0
            verdict = {"accept": accept, "delta": 0.02 if accept else -0.01, "ci": [-0.01, 0.05], "p_value": 0.01 if accept else 0.6,
                       "n": min(per_eval, len(val)), "n_total": len(val), "method": "exact McNemar", "stopped_early": False,
                       "reason": "synthetic", "alpha": 0.05 / (gen * (gen + 1))}
            store.update_generation(gen, status="decided", candidate_id=cid, verdict=verdict, lesson="", val_eval=veid,
                                    finished=time.time(), rollouts=2 * per_eval, seconds=30.0)
            if accept:
                store.push_champion(cid, f"accepted in generation {gen}", gen)
                champion = cid
        store.set_meta("status", "done")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generations", type=int, default=20)
    ap.add_argument("--rollouts", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from fastapi.testclient import TestClient

    from sia.cli.ui import make_app
    from sia.store.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        t0 = time.monotonic()
        synthesize(run_dir, args.generations, args.rollouts)
        with Store(run_dir, write=False) as store:
            n = store.count_rollouts()
            last = store.rollouts(limit=1, offset=n - 1)[0].id
        print(f"synthesized {args.generations} generations, {n} rollouts in {time.monotonic() - t0:.1f} s")
        client = TestClient(make_app([run_dir]))
        views = {"page": "/", "run list": "/api/runs", "run view": "/api/runs/0", "gate of generation 10": "/api/runs/0/gate/10",
                 "diff h0 h20": "/api/runs/0/diff?a=h0&b=h20", "trajectories, first page": "/api/runs/0/rollouts?offset=0",
                 "trajectories, last page": f"/api/runs/0/rollouts?offset={n - 50}", "a trajectory": f"/api/runs/0/rollout/{last}"}
        rows = []
        for name, path in views.items():
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                r = client.get(path)
                times.append(time.perf_counter() - t)
                assert r.status_code == 200, (path, r.status_code, r.text[:200])
            rows.append({"view": name, "first_s": round(times[0], 4), "best_s": round(min(times), 4), "under_1s": times[0] < 1.0})
        opening = sum(r["first_s"] for r in rows if r["view"] in ("page", "run list", "run view", "trajectories, first page"))
    print(f"{'view':<28}{'first (s)':>10}{'best (s)':>10}  first under 1 s")
    for r in rows:
        print(f"{r['view']:<28}{r['first_s']:>10.4f}{r['best_s']:>10.4f}  {'yes' if r['under_1s'] else 'NO'}")
    print(f"opening a run (page, run list, run view, first page of trajectories), first requests: {opening:.4f} s")
    out = args.out or Path(__file__).parent / "results" / "ui-open" / commit()
    out.mkdir(parents=True, exist_ok=True)
    table = {"generations": args.generations, "rollouts": n, "views": rows, "opening_s": opening}
    (out / "table.json").write_text(json.dumps(table, indent=1))
    write_record(out, generations=args.generations, rollouts=n, repeats=args.repeats)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
