"""The JSON summary of a run, read back from its store: what `sia run --json`, `sia status` and the report show."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sia.store.run import Run


def run_summary(run: Run) -> dict[str, Any]:
    """The JSON summary of a run: baseline and final scores on val and test, and every generation."""
    store = run.store
    champs = store.champions()
    baseline = run.baseline()
    final = store.champion()

    def describe(cid: str | None) -> dict[str, Any]:
        if cid is None:
            return {}
        c = store.candidate(cid)
        return {"candidate": cid, "harness_version": c.harness_version, "adapter": c.adapter_version,
                "val": run.score(cid, "val"), "test": run.score(cid, "test"),
                "val_detail": run.scored(cid, "val"), "test_detail": run.scored(cid, "test")}

    gens = []
    for g in store.generations():
        p, v = g.proposal, g.verdict
        gens.append({"generation": g.gen, "lever": p["lever"], "kind": p["kind"], "candidate": g.candidate_id,
                     "accepted": bool(v and v["accept"]), "delta": v["delta"] if v else None, "p_value": v["p_value"] if v else None,
                     "ci": v["ci"] if v else None, "n": v["n"] if v else None, "stopped_early": v["stopped_early"] if v else None,
                     "reason": v["reason"] if v else g.lesson, "rationale": p.get("rationale") or p.get("reason", ""),
                     "expected_gain": p.get("expected_gain"), "prior": (p.get("prior") or {}).get("delta"),
                     "prior_records": (p.get("prior") or {}).get("n"),
                     "status": g.status, "val": run.score(g.candidate_id, "val") if v and v["accept"] else None,
                     "alpha": v.get("alpha") if v else None,
                     "served_adapters": run.served_adapters(g.val_eval) if g.val_eval else []})
    cfg = store.get_meta("run_config", {})

    agent_tokens, agent_usd = store.agent_usage()
    return {"run_dir": str(store.run_dir), "task": run.task.name, "seed": cfg.get("seed"), "levers": cfg.get("levers"),
            "status": store.get_meta("status"), "stop_reason": store.get_meta("stop_reason"),
            "baseline": describe(baseline), "final": describe(final), "generations": gens,
            "accepted": sum(1 for g in gens if g["accepted"]), "rollouts": store.count_rollouts(), "tokens": store.count_tokens(),
            "elapsed_s": round(float(store.get_meta("elapsed_s", 0.0)), 1), "limits": store.get_meta("limits"),
            "outcomes": run.outcome_shares(), "budget_s": cfg.get("budget"),
            "agents": {"calls": store.agent_call_count(), "tokens": agent_tokens, "usd": round(agent_usd, 4)},
            "error_control": store.get_meta("error_control"), "attribution": store.get_meta("attribution"),
            "sealed_test": {cid: {k: seal[k] for k in ("evaluation", "n", "score", "sha256")}
                            for cid, seal in store.get_meta("sealed_test", {}).items()},
            "champions": [{"candidate": c.candidate_id, "reason": c.reason, "generation": c.generation} for c in champs]}
