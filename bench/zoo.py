"""The zoo table: sia against the fixed recipes a practitioner would run, on every zoo task, at the same budget.

For each task (`--tasks`, default every task `make zoo` built) and seed, each arm
writes its per-example test scores to `--out/<task>/<arm>-seed<seed>.json` with
the commit, command, date and seconds it took; an arm with a file is not run
again, so the table is built over several sittings and resumes where it stopped.
A `sia run` interrupted halfway is continued with `sia resume` in its own budget.

Arms (see bench/zoo_recipes.py): `majority`, `template` (the baseline harness),
`knn` (labelled tasks), `finetune`, and `sia` (`sia run TASK --budget B`). Each
arm's unused budget is recorded; for `sia`, the run's own. `sia-memory`, asked
for by name once the other tasks' `sia` runs are there, is leave-one-task-out:
the same run with memory on, the memory holding the gated changes of every
other task's `sia` run (`sia memory add`) and none of its own.

Printed and written (`--table`, default bench/results/zoo/<commit>/zoo.json, and
the markdown table beside it): per task and arm the test mean with its 95% CI and
n, sia against the best recipe (delta, paired one-sided p) and against the
template baseline, and the unused minutes of each sia run.

    python bench/zoo.py --budget 10m --seeds 1 [--tasks boolq,gsm8k] [--arms majority,template,knn,finetune,sia]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))
ROOT = Path(__file__).resolve().parents[1]
from record import commit, write_record  # noqa: E402

ARMS = ("majority", "template", "knn", "finetune", "sia", "sia-memory")
DEFAULT_ARMS = ARMS[:-1]
"""`sia-memory` (leave-one-task-out) needs the other tasks' `sia` runs first: ask for it by name once they are there."""


def seconds(budget: str) -> float:
    return float(budget[:-1]) * {"s": 1, "m": 60, "h": 3600}[budget[-1]] if budget[-1] in "smh" else float(budget)


def run_sia(task: str, seed: int, budget: str, work: Path, extra: list[str], env: dict[str, str] | None = None
            ) -> tuple[dict[str, float], dict]:
    """A real `sia run` (or its resumption); the champion's per-example test scores and the run's summary."""
    from sia.store.run import Run

    sia = str(Path(sys.executable).parent / "sia")
    run_dir = work / f"sia-seed{seed}"
    if (run_dir / "sia.db").is_file():
        cmd = [sia, "resume", str(run_dir), "--json"]
    else:
        cmd = [sia, "run", task, "--budget", budget, "--seed", str(seed), "--run-dir", str(run_dir), "--json", *extra]
    with open(work / f"sia-seed{seed}.log", "a") as log:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, "CI": "true", **(env or {})})
    if r.returncode != 0:
        raise SystemExit(f"sia run on {task} failed (exit {r.returncode}); see {work / f'sia-seed{seed}.log'}")
    summary = json.loads(r.stdout)
    with Run.open(run_dir) as run:
        scores = run.scores_of(run.store.champion(), "test")
    return scores, summary


def run_arm(task_name: str, arm: str, seed: int, budget: str, out: Path, extra: list[str]) -> dict | None:
    """The arm's result file, made now if it is not there yet; None when the arm does not apply to the task."""
    import zoo_recipes as recipes

    from sia.task.loading import load_task

    task = load_task(task_name)
    path = out / task_name / f"{arm}-seed{seed}.json"
    if path.is_file():
        return json.loads(path.read_text())
    if arm == "knn" and not (task.labels and task.spec.output == "text" and not task.spec.multi_label):
        return None
    if arm in ("majority", "knn") and task.spec.output == "program":
        return None
    work = out / task_name / "work" / f"{arm}-seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    t0, info, started = time.monotonic(), {}, commit()  # the code that runs is the code at the start (an editable install)
    print(f"  {task_name}: {arm} seed {seed} ...", flush=True)
    if arm == "majority":
        scores = recipes.majority(task)
    elif arm == "template":
        scores = recipes.sia_eval(task_name, work / "eval")
    elif arm == "knn":
        scores = recipes.knn(task)
    elif arm == "finetune":
        scores, info = recipes.finetune(task, task_name, work, seconds(budget), seed)
    else:
        env, used = {}, []
        if arm == "sia-memory":  # leave one task out: the memory holds the other tasks' `sia` runs, none of this one's
            env, used = loto_memory(out, task_name, seed, work)
            extra = [x for x in extra if x != "--no-memory"]
        scores, summary = run_sia(task_name, seed, budget, work, extra, env)
        info = {
            "memory_from": used,
            "baseline_test": summary["baseline"]["test"],
            "final_test": summary["final"]["test"],
            "stop_reason": summary.get("stop_reason"),
            "elapsed_s": summary.get("elapsed_s"),
            "unused_s": max(0.0, seconds(budget) - float(summary.get("elapsed_s") or 0)),
            "generations": [
                {k: g.get(k) for k in ("generation", "lever", "kind", "accepted", "expected_gain", "delta", "p_value")}
                for g in summary.get("generations", [])
            ],
        }
    result = {
        "task": task_name,
        "arm": arm,
        "seed": seed,
        "budget": budget,
        "commit": started,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": " ".join(["python", "bench/zoo.py", "--tasks", task_name, "--arms", arm, "--budget", budget]),
        "seconds": round(time.monotonic() - t0, 1),
        "scores": scores,
        "info": info,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    return result


def loto_memory(out: Path, task_name: str, seed: int, work: Path) -> tuple[dict[str, str], list[str]]:
    """A memory folder for `task_name`'s leave-one-task-out run: the gated changes of every other task's finished `sia`
    run of this seed (`sia memory add`), none of its own. Returns the environment that points a run at it and the tasks."""
    from sia import api
    from sia.store import priors

    folder = work / "memory"
    runs = sorted(p for p in out.glob(f"*/work/sia-seed{seed}/sia-seed{seed}")
                  if p.parts[-4] != task_name and (out / p.parts[-4] / f"sia-seed{seed}.json").is_file())
    if not runs:
        raise SystemExit(f"no other task's finished sia run (seed {seed}) under {out}: run the sia arm on them first")
    api.memory_add(runs, folder / "outcomes.jsonl")
    used = sorted({r.task for r in priors.load(folder / "outcomes.jsonl")} - {task_name})
    return {"SIA_MEMORY": str(folder)}, used


def table(out: Path, tasks: list[str], arms: list[str], seeds: int) -> tuple[dict, str]:
    from sia.evaluation.stats import mean_ci
    from sia.loop.gate import compare
    from sia.task.loading import load_task

    rows, lines = (
        {},
        [
            "| task | n | " + " | ".join(arms) + " | sia - best recipe (p) | sia - template (p) | memory - no memory (p) | sia unused |",
            "| --- | --- | " + " | ".join("---" for _ in arms) + " | --- | --- | --- | --- |",
        ],
    )
    for name in tasks:
        binary = load_task(name).spec.score == "binary"
        per: dict[str, dict[str, float]] = {}
        unused = []
        for arm in arms:
            for seed in range(seeds):
                path = out / name / f"{arm}-seed{seed}.json"
                if path.is_file():
                    r = json.loads(path.read_text())
                    per.setdefault(arm, {}).update({f"{seed}:{k}": v for k, v in r["scores"].items()})
                    if arm.startswith("sia"):
                        unused.append(r["info"].get("unused_s", 0.0) / 60)
        cells, means = [], {}
        for arm in arms:
            if arm in per:
                m, (lo, hi) = mean_ci(list(per[arm].values()), binary)
                means[arm] = m
                cells.append(f"{m:.3f} ({lo:.2f}-{hi:.2f})")
            else:
                cells.append("-")
        recipes = [a for a in means if not a.startswith("sia")]
        vs_best = vs_base = vs_memory = "-"
        if "sia" in per and recipes:
            best = max(recipes, key=lambda a: means[a])
            v = compare(per[best], per["sia"], binary=binary)
            vs_best = f"{v.delta:+.3f} vs {best} (p {v.p_value:.3g})"
            rows.setdefault(name, {})["sia_vs_best"] = {"recipe": best, "delta": v.delta, "p": v.p_value, "n": v.n}
        if "sia" in per and "template" in per:
            v = compare(per["template"], per["sia"], binary=binary)
            vs_base = f"{v.delta:+.3f} (p {v.p_value:.3g})"
            rows.setdefault(name, {})["sia_vs_template"] = {"delta": v.delta, "p": v.p_value, "n": v.n}
        if "sia" in per and "sia-memory" in per:
            v = compare(per["sia"], per["sia-memory"], binary=binary)
            vs_memory = f"{v.delta:+.3f} (p {v.p_value:.3g})"
            rows.setdefault(name, {})["memory_vs_none"] = {"delta": v.delta, "p": v.p_value, "n": v.n}
        n = max((len(v) for v in per.values()), default=0)
        lines.append(
            f"| {name} | {n} | "
            + " | ".join(cells)
            + f" | {vs_best} | {vs_base} | {vs_memory} | "
            + (", ".join(f"{u:.1f} min" for u in unused) or "-")
            + " |"
        )
        rows.setdefault(name, {}).update(means=means, scores=per, unused_min=unused)
    loto = {t: r["memory_vs_none"]["delta"] for t, r in rows.items() if "memory_vs_none" in r}
    if loto:
        hurt = [t for t, d in loto.items() if d < 0]
        lines += ["", f"Leave-one-task-out memory on {len(loto)} task(s): mean gain {sum(loto.values()) / len(loto):+.3f} "
                      f"on test; memory hurt on {', '.join(hurt) or 'none'}."]
    return rows, "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="", help="comma-separated zoo tasks (default: every task built)")
    ap.add_argument("--arms", default=",".join(DEFAULT_ARMS), help=f"comma-separated, from {', '.join(ARMS)}")
    ap.add_argument("--budget", default="10m")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "zoo" / "runs")
    ap.add_argument("--table", type=Path, default=None)
    ap.add_argument("--finished-only", action="store_true", help="tabulate what is there; run nothing")
    ap.add_argument("extra", nargs="*", help="after --: options for every sia run")
    args = ap.parse_args()
    from sia.task.zoo import zoo_tasks

    tasks = [t for t in args.tasks.split(",") if t] or zoo_tasks()
    if not tasks:
        raise SystemExit("no zoo tasks built: run `make zoo`")
    arms = [a for a in args.arms.split(",") if a]
    if unknown := set(arms) - set(ARMS):
        raise SystemExit(f"unknown arms {sorted(unknown)}; choose from {', '.join(ARMS)}")
    if not args.finished_only:
        for name in tasks:
            for seed in range(args.seeds):
                for arm in arms:
                    run_arm(name, arm, seed, args.budget, args.out, args.extra)
    rows, text = table(args.out, tasks, arms, args.seeds)
    print(text)
    target = args.table or ROOT / "bench" / "results" / "zoo" / commit() / "zoo.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(
        json.dumps(
            {"commit": commit(), "budget": args.budget, "seeds": args.seeds, "date": time.strftime("%Y-%m-%d"), "tasks": rows}, indent=1
        )
    )
    target.with_suffix(".md").write_text(text + "\n")
    write_record(target.parent, tasks=tasks, arms=arms, budget=args.budget, seeds=args.seeds)
    print(f"written: {target}")


if __name__ == "__main__":
    main()
