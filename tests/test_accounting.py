"""A run's accounts: the sealed test, the 2x2 attribution of a both-levers champion, the manifest and `sia verify`,
and what agents read of validation (the ladder)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ScriptedAgent, new_run

from sia.agents.proposal import HarnessEdit, WeightUpdate
from sia.api import rollback, verify
from sia.errors import StoreError
from sia.evaluation.stats import factorial_2x2
from sia.harness.template import make_config, render
from sia.loop import holdout
from sia.loop.config import RunConfig
from sia.loop.gate import GateConfig
from sia.loop.loop import Loop
from sia.store.memory import Entry, Memory
from sia.store.run import Run
from sia.task.loading import load_task


@pytest.fixture
def graded_task(tiny_task):
    """The tiny sentiment copy with its grader in a file of the task folder, so that editing it is a task change."""
    (tiny_task / "grader.py").write_text("from sia.task.graders import exact_label\n\n\ndef grade(example, output):\n"
                                         "    return exact_label(example, output)\n")
    toml = (tiny_task / "task.toml").read_text().replace('entry = "sia.task.graders:exact_label"', 'entry = "grader.py:grade"')
    (tiny_task / "task.toml").write_text(toml)
    return tiny_task


def test_both_levers_are_attributed_on_a_sealed_test_and_the_run_verifies(graded_task, tmp_path, own_runtime):
    task = load_task(graded_task)
    edit = HarnessEdit(render(make_config(task.public_info(), mode="score", calibrate=True)), "label scoring", "score_labels")
    ce = {"examples": 4, "samples": 1, "steps": 1, "prompts_per_step": 4}
    agent = ScriptedAgent([edit, WeightUpdate("ce", ce, rationale="scripted ce", kind="ce")])
    # a gate that accepts anything (built without validation), so the champion changes both levers
    config = RunConfig(task=str(graded_task), budget=900, analysis_examples=4,
                       gate=GateConfig.model_construct(tau=-1.0, alpha=1.01, alpha_scope="gate", futility_after=1.0))
    run_dir = tmp_path / "run"
    with new_run(run_dir, config) as run:
        summary = Loop(run, own_runtime, config, agent=agent).run()
        store = run.store
        assert [g["accepted"] for g in summary["generations"][:2]] == [True, True]
        a = summary["attribution"]
        cells = a["candidates"]
        first = summary["generations"][0]["candidate"]
        assert cells["h0,a0"] == summary["baseline"]["candidate"] and cells["h,a"] == summary["final"]["candidate"]
        assert cells["h,a0"] == first, "the harness-only cell is the generation-1 champion, not a new candidate"
        assert store.candidate(cells["h0,a"]).lever == "attribution"
        assert store.candidate(cells["h0,a"]).adapter_version == summary["final"]["adapter"]
        e = a["effects"]
        assert a["n"] == 4
        assert e["total"]["mean"] == pytest.approx(e["harness"]["mean"] + e["weights"]["mean"] + e["interaction"]["mean"])
        assert e["total"]["mean"] == pytest.approx(a["cells"]["h,a"] - a["cells"]["h0,a0"])
        # one test evaluation per reported candidate, each sealed with the hash of its per-example scores
        tested = [ev for ev in store.evaluations() if ev.split == "test"]
        assert sorted(ev.candidate_id for ev in tested) == sorted(cells.values())
        assert set(summary["sealed_test"]) == set(cells.values())
        # the agents never saw a test example: every state held train examples only
        assert all(ex.split == "train" for s in agent.seen_states for ex in s.train)
        # a second scoring of a sealed candidate is refused, and so is a test scoring under any other purpose
        champion = cells["h,a"]
        with pytest.raises(StoreError, match="sealed"):
            store.add_evaluation(champion, "test", 0, 1, 4, {"purpose": f"{champion}:test"})
        with pytest.raises(StoreError, match="sealed"):
            store.add_evaluation(champion, "test", 0, 1, 4, {"purpose": f"{champion}:peek"})
        loop = Loop(run, own_runtime, config, agent=ScriptedAgent([]))
        val_eid = store.evaluation_id(champion, "val")
        with pytest.raises(StoreError, match="sealed"):
            loop.ctx.run_rollouts(champion, val_eid, "val", task.split("test"), "a lever peeking at test")

    # the manifest holds every hash, and a fresh run verifies
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["seeds"]["run"] == 0 and m["sia"]["version"] and m["base_model"]["files"]
    assert set(m["harness_versions"]) == {"h0", "h1"} and set(m["adapters"]) == {summary["final"]["adapter"]}
    assert any(p.endswith("grader.py") for p in m["task"]["files"]["grader"])
    assert len(m["task"]["files"]["data"]) == 2 and set(m["sealed_test"]) == set(cells.values())
    r = verify(run_dir)
    assert r["ok"] and r["changed"] == [] and r["checked"]["sealed test scorings"] == 4, r
    # an edited grader is named, and `sia verify` exits non-zero
    with open(graded_task / "grader.py", "a") as f:
        f.write("# edited after the run\n")
    r = verify(run_dir)
    assert not r["ok"] and len(r["changed"]) == 1 and "task grader file" in r["changed"][0] and "grader.py" in r["changed"][0]
    sia = str(Path(sys.executable).parent / "sia")
    cli = subprocess.run([sia, "verify", str(run_dir)], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 1 and "grader.py" in cli.stdout, cli.stdout + cli.stderr
    # so is a test score changed in the store
    with Run.open(run_dir, write=True) as run:
        row = run.store.rollouts(run.store.evaluation_id(champion, "test"))[0]
        run.store.db.execute("UPDATE rollouts SET score = ? WHERE id = ?", (1.0 - row.score, row.id))
    r = verify(run_dir)
    assert any(f"test scores of {champion}" in c for c in r["changed"]), r["changed"]
    # after a rollback a sealed candidate may be scored again, once
    rollback(run_dir, "h0")
    with Run.open(run_dir, write=True) as run:
        run.store.add_evaluation(champion, "test", 0, 1, 4, {"purpose": f"{champion}:test"})


def test_factorial_effects_add_up_and_carry_paired_intervals():
    rng = np.random.default_rng(0)
    ids = [f"t{i}" for i in range(300)]
    base = rng.random(300) < 0.5
    harness = base | (rng.random(300) < 0.2)  # the harness fixes some
    weights = base | (rng.random(300) < 0.1)
    both = harness | weights
    cells = {name: dict(zip(ids, v.astype(float))) for name, v in
             (("h0,a0", base), ("h,a0", harness), ("h0,a", weights), ("h,a", both))}
    a = factorial_2x2(cells, seed=1)
    e = a["effects"]
    assert a["n"] == 300
    assert e["harness"]["mean"] > e["weights"]["mean"] > 0 and e["harness"]["p_value"] < 0.01
    assert e["interaction"]["mean"] <= 0, "fixing the same example twice counts once: a negative interaction"
    for x in e.values():
        assert x["ci"][0] <= x["mean"] <= x["ci"][1]
    with pytest.raises(ValueError, match="cells missing"):
        factorial_2x2({k: cells[k] for k in ("h0,a0", "h,a")})


def test_agents_read_validation_on_a_ladder():
    entries = [Entry(1, "harness", "few_shot", False, 0.012, 0.31, 40, 30.0, "few_shot did not give a significant gain (p 0.31)"),
               Entry(2, "harness", "score_labels", True, 0.081, 0.0004, 40, 30.0, "score_labels helped here (+0.081)"),
               Entry(3, "harness", "refused", False, 0.0, 1.0, 0, 1.0, "invalid harness: syntax error")]
    steps = {1: 0.03, 2: 0.025}  # generation 3 was refused before any gate
    seen = holdout.ladder_memory(Memory(entries), steps)
    one, two, three = seen.entries
    assert one.delta == 0.0 and two.delta == pytest.approx(0.075) and math.isnan(one.p_value)
    assert "0.31" not in one.lesson and "0.081" not in two.lesson and two.accepted
    assert three == entries[2], "a change refused before the gate holds no validation number"
    assert "p=" not in "\n".join(seen.summary()[:2]) and "p=1" in seen.summary()[2]
    assert holdout.step((0.70, 0.78)) == pytest.approx(0.08 / (2 * 1.959964))
    assert holdout.rung(0.8812, 0.02) == pytest.approx(0.88)
