"""The weight lever in the loop: on-policy collection through the harness, a versioned adapter, the gate, rollback."""

import json

from conftest import ScriptedAgent, new_run

from sia.agents.proposal import WeightUpdate
from sia.api import rollback
from sia.loop.config import RunConfig
from sia.loop.gate import GateConfig
from sia.loop.loop import Loop
from sia.loop.weight_lever import update_seed


def test_weight_update_trains_on_policy_through_the_harness_and_becomes_a_gated_adapter_version(tmp_path, own_runtime):
    small = {"rounds": 2, "examples": 4, "samples": 4, "steps": 1, "prompts_per_step": 2}
    ce = {"examples": 6, "samples": 1, "steps": 1, "prompts_per_step": 4}
    agent = ScriptedAgent([WeightUpdate("ppo", {}, rationale="an algorithm sia does not have"),
                           WeightUpdate("grpo", small, rationale="scripted GRPO", kind="grpo"),
                           WeightUpdate("ce", ce, rationale="scripted ce", kind="ce")])
    # a gate that accepts anything, so the adapter becomes the champion and rollback can be exercised
    # (built without validation: a negative tau and an alpha above 1 are refused from users)
    config = RunConfig(task="sentiment", budget=900, val_limit=16, test_limit=8, analysis_examples=4, levers=["weights"],
                       gate=GateConfig.model_construct(tau=-1.0, alpha=1.01, alpha_scope="gate", futility_after=1.0),
                       track="tensorboard", track_uri=str(tmp_path / "tb-live"))
    run_dir = tmp_path / "run"
    with new_run(run_dir, config) as run:
        store = run.store
        summary = Loop(run, own_runtime, config, agent=agent).run()
        gens = summary["generations"]
        assert not gens[0]["accepted"] and "weight update refused: unknown training algorithm 'ppo'" in gens[0]["reason"]
        assert gens[1]["accepted"] and gens[2]["accepted"] and summary["final"]["adapter"] == "a3"
        # the adapter is an immutable version folder in PEFT's layout, with its lineage and training log
        path = store.adapter_path("a2")
        assert path == run_dir / "adapters" / "a2" and (path / "adapter_config.json").is_file()
        meta = json.loads((path / "sia_training.json").read_text())
        assert meta["lineage"]["parent"] is None and len(meta["lineage"]["collected_from"]) == 2
        assert meta["config"]["seed"] == update_seed(config.seed, 2), "the run's seed reaches the LoRA initialisation"
        assert len(meta["log"]) == 2 and all({"reward_mean", "reward_std", "loss", "kl", "predicted"} <= set(e) for e in meta["log"])
        assert not (run_dir / "adapters" / ".rounds").exists(), "intermediate adapters are cleaned up"
        # collection: 4 samples per example, sampled at temperature 1 although the harness asks for greedy decoding;
        # round 2 ran on the adapter as trained after round 1
        models = []
        for eid in meta["lineage"]["collected_from"]:
            ev = store.evaluation(eid)
            assert ev.split == "train" and ev.samples == 4
            rows = store.rollouts(eid)
            assert len(rows) == 16
            calls = [e for e in store.events(rows[0].id) if e.kind == "llm_call"]
            assert calls and calls[0].data["params"]["temperature"] == 1.0
            models.append(calls[0].data["model"])
        assert models[0] != "a2-t1r1" and models[1] == "a2-t1r1"
        # the gate compared (h0, a2) against (h0, base) on the same validation examples
        cand = store.candidate(gens[1]["candidate"])
        assert cand.harness_version == "h0" and cand.adapter_version == "a2"
        val_calls = [e for r in store.rollouts(store.evaluation_id(cand.id, "val"))[:2] for e in store.events(r.id)
                     if e.kind == "llm_call"]
        assert val_calls and all(c.data["model"] == "a2" for c in val_calls)
        # ce takes prompts, not sampled replies: the new champion's train analysis (4 examples, same harness and
        # adapter) counts towards the update's 6 examples, and only the 2 others are collected
        lineage = json.loads((store.adapter_path("a3") / "sia_training.json").read_text())["lineage"]
        analysis, collect = lineage["collected_from"]
        assert analysis == store.evaluation_id(gens[1]["candidate"], "train") and lineage["parent"] == "a2"
        seen = [{r.example_id for r in store.rollouts(eid)} for eid in (analysis, collect)]
        assert len(seen[0]) == 4 and len(seen[1]) == 2 and not seen[0] & seen[1]
    # tracked live (--track tensorboard): every training step and every generation's gate, read back with TensorBoard's
    # own reader; `sia export` of the finished run writes the same scalars
    from test_tracking import scalars

    from sia.api import export

    live = scalars(tmp_path / "tb-live")
    assert len(live["train/loss"]) == 3, "a2's 2 steps, then a3's 1, numbered across the run"
    assert [s for s, _ in live["train/loss"]] == [1, 2, 3]
    assert [v for _, v in live["gate/accepted"]] == [0.0, 1.0, 1.0] and live["val/champion"][0][0] == 0
    export(run_dir, "tensorboard", str(tmp_path / "tb-after"))
    assert scalars(tmp_path / "tb-after") == live
    # rollback works for adapters as for harnesses
    s = rollback(run_dir, "h0")
    assert s["final"]["adapter"] is None
    s = rollback(run_dir, "a2")
    assert s["final"]["adapter"] == "a2"
