"""Ablation: baseline, harness only, weights only and both levers, at the same budget, over several seeds.

Each (arm, seed) is a real `sia run` in its own process and run directory
(`--out`, default bench/results/ablation/<task>/<commit>/logs). The whole table takes hours,
so it resumes where it stopped: a finished run is kept, and one that was
interrupted (a run directory without the bench's summary) is continued with
`sia resume`, within its own budget. "baseline" is the Meta-Agent's harness on
the base model, scored on test by every run before it changes anything.

Printed: held-out test mean per arm with a 95% interval over all (seed, test
example) pairs, and the one-sided paired p-value of "both" against the better
single lever, pairing the same test example in the same seed (exact McNemar
for binary tasks, a permutation test otherwise: sia's gate statistics). For
the "both" runs whose champion changed the harness and the adapter, the 2x2
attribution each run scored on its sealed test, pooled over seeds: the harness
effect, the weights effect and their interaction with paired 95% CIs.

    python bench/ablation.py --task sentiment --budget 10m --seeds 3
    python bench/ablation.py --arms weights --out /tmp/weights-hf -- --policy-backend hf

`--arms` runs a subset; arguments after `--` go to every `sia run`.
`--earlier TABLE` completes this table with the runs of an earlier one (an
arm run on an older commit), each marked with the table it came from. The
table, with every run's per-example test scores (so anyone can recompute the
p-values) and the lever each generation chose with its expected and realised
gain, is written to bench/results/ablation/<task>/<commit>/table.json (`--table`) with its record.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from record import results_dir, write_record  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ARMS = {"harness": "harness", "weights": "weights", "both": "harness,weights"}


def test_scores(run_dir: Path, which: str) -> dict[str, float]:
    from sia.store.run import Run

    with Run.open(run_dir) as run:
        cid = run.baseline() if which == "baseline" else run.store.champion()
        return run.scores_of(cid, "test")


def attribution_cells(run_dir: Path) -> dict[str, dict[str, float]] | None:
    """Per-example test scores of the run's 2x2 attribution cells, when its champion changed both levers."""
    from sia.store.run import Run

    with Run.open(run_dir) as run:
        a = run.store.get_meta("attribution") or {}
        if not a.get("candidates"):
            return None
        return {cell: run.scores_of(cid, "test") for cell, cid in a["candidates"].items()}


def run_arm(task: str, arm: str, seed: int, budget: str, out: Path, extra: list[str]) -> Path:
    run_dir = out / f"{arm}-seed{seed}"
    done = run_dir / "summary.json"
    if done.is_file():
        report(arm, seed, json.loads(done.read_text()), "finished earlier")
        return run_dir
    sia = str(Path(sys.executable).parent / "sia")
    t0 = time.monotonic()
    if (run_dir / "sia.db").is_file():  # interrupted: continue it within its own budget
        print(f"  {arm:8s} seed {seed}: resuming {run_dir}", flush=True)
        cmd = [sia, "resume", str(run_dir), "--json"]
    else:
        if run_dir.exists():  # nothing recorded yet
            import shutil

            shutil.rmtree(run_dir)
        cmd = [
            sia,
            "run",
            task,
            "--levers",
            ARMS[arm],
            "--budget",
            budget,
            "--seed",
            str(seed),
            "--run-dir",
            str(run_dir),
            "--json",
            *extra,
        ]
    with open(out / f"{arm}-seed{seed}.log", "a") as log:  # the live view's plain lines, kept beside the run
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, "CI": "true"})
    if r.returncode != 0:
        raise SystemExit(f"{arm} seed {seed} failed (exit {r.returncode}); see {out / f'{arm}-seed{seed}.log'}")
    summary = json.loads(r.stdout)
    summary["bench_seconds"] = round(time.monotonic() - t0, 1)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    report(arm, seed, summary, f"{summary['bench_seconds']:.0f}s")
    return run_dir


def report(arm: str, seed: int, summary: dict, when: str) -> None:
    print(
        f"  {arm:8s} seed {seed}: test {summary['baseline']['test']:.3f} -> {summary['final']['test']:.3f} "
        f"({summary['accepted']} accepted, {when}): {choices(summary)}",
        flush=True,
    )


def choices(summary: dict) -> str:
    """The lever each generation chose, its expected and realised gain: "1 harness/score_labels +0.05->+0.21*"."""
    out = []
    for g in summary.get("generations", []):
        exp = f"{g['expected_gain']:+.2f}" if g.get("expected_gain") is not None else "?"
        real = f"{g['delta']:+.2f}" if g.get("delta") is not None else "-"
        out.append(f"{g['generation']} {g['lever']}/{g['kind']} {exp}->{real}{'*' if g.get('accepted') else ''}")
    return "; ".join(out) or "no generation"


def _commit() -> str:
    """The sia commit the runs of this table used (the checkout the bench ran from; runs kept from an --earlier table
    say where they came from)."""
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="sentiment")
    ap.add_argument("--budget", default="10m")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--arms", default=",".join(ARMS), help="comma-separated subset of " + ", ".join(ARMS))
    ap.add_argument("--table", type=Path, default=None,
                    help="where the table goes (default: bench/results/ablation/<task>/<commit>/table.json)")
    ap.add_argument("--finished-only", action="store_true", help="tabulate the finished runs; start or resume none")
    ap.add_argument(
        "--earlier",
        type=Path,
        default=None,
        help="an earlier table (its JSON): an (arm, seed) with no run in --out is taken from it, marked so",
    )
    ap.add_argument("extra", nargs="*", help="after --: options for every sia run")
    args = ap.parse_args()
    arms = [a for a in args.arms.split(",") if a]
    if unknown := set(arms) - set(ARMS):
        raise SystemExit(f"unknown arms {sorted(unknown)}; choose from {', '.join(ARMS)}")
    from sia.evaluation.stats import mean_ci
    from sia.loop.gate import compare
    from sia.task.loading import load_task

    binary = load_task(args.task).spec.score == "binary"
    folder = results_dir("ablation", args.task)
    out = args.out or folder / "logs"
    out.mkdir(parents=True, exist_ok=True)
    scores: dict[str, dict[str, float]] = {arm: {} for arm in ("baseline", *arms)}
    runs: dict[str, dict] = {}
    cells: dict[str, dict[str, float]] = {}  # the 2x2 attribution cells of "both" runs whose champion changed both levers
    earlier = json.loads(args.earlier.read_text()) if args.earlier else {"runs": {}, "scores": {}}
    for seed in range(args.seeds):
        for arm in arms:
            name, mine = f"{arm}-seed{seed}", (out / f"{arm}-seed{seed}" / "summary.json").is_file()
            if not mine and name in earlier["runs"]:  # kept from the earlier table with its per-example scores
                for which in (arm, "baseline"):
                    if which == arm or not any(k.startswith(f"{seed}:") for k in scores["baseline"]):
                        scores[which].update({k: v for k, v in earlier["scores"][which].items() if k.startswith(f"{seed}:")})
                runs[name] = {**earlier["runs"][name], "from": earlier["runs"][name].get("from", args.earlier.name)}
                report(
                    arm,
                    seed,
                    {
                        "baseline": {"test": runs[name]["baseline_test"]},
                        "final": {"test": runs[name]["final_test"]},
                        "accepted": runs[name]["accepted"],
                        "generations": runs[name]["generations"],
                    },
                    f"from {runs[name]['from']}",
                )
                continue
            if args.finished_only and not mine:
                continue
            run_dir = run_arm(args.task, arm, seed, args.budget, out, args.extra)
            scores[arm].update({f"{seed}:{k}": v for k, v in test_scores(run_dir, "final").items()})
            if not any(k.startswith(f"{seed}:") for k in scores["baseline"]):
                scores["baseline"].update({f"{seed}:{k}": v for k, v in test_scores(run_dir, "baseline").items()})
            summary = json.loads((run_dir / "summary.json").read_text())
            runs[f"{arm}-seed{seed}"] = {
                k: summary.get(k) for k in ("seed", "levers", "accepted", "bench_seconds", "elapsed_s", "stop_reason", "limits")
            }
            for cell, cell_scores in (attribution_cells(run_dir) or {}).items():
                cells.setdefault(cell, {}).update({f"{seed}:{k}": v for k, v in cell_scores.items()})
            runs[f"{arm}-seed{seed}"].update(
                attribution=summary.get("attribution"),
                baseline_test=summary["baseline"]["test"],
                final_test=summary["final"]["test"],
                final=f"{summary['final'].get('harness_version')}+{summary['final'].get('adapter')}",
                generations=[
                    {k: g.get(k) for k in ("generation", "lever", "kind", "accepted", "expected_gain", "delta", "p_value", "n")}
                    for g in summary["generations"]
                ],
            )
    print(f"\nablation on {args.task}, budget {args.budget} per run, seeds {args.seeds} (held-out test)")
    print(f"{'arm':10s} {'mean':>7s}   95% CI            n")
    means = {}
    for arm, s in scores.items():
        if not s:
            continue
        mean, (lo, hi) = mean_ci(list(s.values()), binary)
        means[arm] = mean
        print(f"{arm:10s} {mean:7.3f}   ({lo:.3f}, {hi:.3f})   {len(s)}")
    result = {
        "task": args.task,
        "budget": args.budget,
        "seeds": args.seeds,
        "extra": args.extra,
        "commit": _commit(),
        "means": means,
        "scores": scores,
        "runs": runs,
    }
    singles = [a for a in ("harness", "weights") if scores.get(a)]
    if scores.get("both") and singles:
        better = max(singles, key=lambda a: means[a])
        v = compare(scores[better], scores["both"], binary=binary)
        result["both_vs_better"] = {
            "lever": better,
            "delta": v.delta,
            "p_value": v.p_value,
            "method": v.method,
            "n": v.n,
            "singles_run": singles,
        }
        which = "the better single lever" if len(singles) == 2 else "the only single lever in this table"
        print(f"\nboth vs {better} ({which}): delta {v.delta:+.3f}, paired one-sided p = {v.p_value:.4g} ({v.method}, n={v.n})")
    attributed = [name for name, r in runs.items() if (r.get("attribution") or {}).get("effects")]
    if attributed and len(cells) == 4:
        from sia.evaluation.stats import factorial_2x2

        pooled = factorial_2x2(cells)
        result["attribution"] = {"runs": attributed, **pooled}
        print(f"\nattribution on test, runs whose champion changed both levers ({', '.join(attributed)}), n={pooled['n']}")
        print(f"{'effect':12s} {'mean':>7s}   95% CI (paired)       p (two-sided)")
        for name, e in pooled["effects"].items():
            print(f"{name:12s} {e['mean']:+7.3f}   ({e['ci'][0]:+.3f}, {e['ci'][1]:+.3f})   {e['p_value']:.4g}")
    print("\nlever chosen per generation (expected -> realised gain, * accepted):")
    for name, r in runs.items():
        print(f"  {name:16s} " + choices(r))
    table = args.table or folder / "table.json"
    table.write_text(json.dumps(result, indent=1))
    write_record(table.parent, task=args.task, budget=args.budget, seeds=args.seeds)
    print(f"written: {table}")


if __name__ == "__main__":
    main()
