"""The loop with the real model on a small slice of the sentiment task."""

import pytest

from conftest import new_run
from sia.agents.contract import AgentState, Decision
from sia.agents.proposal import HarnessEdit, Stop
from sia.api import rollback
from sia.harness.template import make_config, read_config, render
from sia.loop.config import RunConfig
from sia.loop.loop import Loop
from sia.task.loading import load_task


class ScriptedAgent:
    """A Feedback-Agent that proposes a fixed list of edits: how a user plugs in their own agent."""

    def __init__(self, proposals):
        self.proposals = list(proposals)
        self.seen_states = []
        self.name = "scripted"

    def decide(self, state: AgentState) -> Decision:
        self.seen_states.append(state)
        return Decision(self.proposals.pop(0) if self.proposals else Stop("script finished"))


def test_broken_edits_are_rejected_with_reasons_and_the_loop_goes_on(tmp_path, runtime):
    task = load_task("sentiment")
    good = render(make_config(task.public_info(), mode="score", calibrate=True))
    agent = ScriptedAgent([
        HarnessEdit("def solve(example, ctx)\n    return 'positive'\n", "a syntax error", "rewrite"),
        HarnessEdit("def solve(example, ctx):\n    raise RuntimeError('always broken')\n", "crashes on every example", "rewrite"),
        HarnessEdit(good, "calibrated label scoring", "score_labels"),
    ])
    config = RunConfig(task="sentiment", budget=900, val_limit=60, test_limit=16, analysis_examples=8, patience=5)
    with new_run(tmp_path / "run", config) as run:
        store = run.store
        summary = Loop(run, runtime, config, agent=agent).run()
        gens = summary["generations"]
        assert [g["kind"] for g in gens] == ["rewrite", "rewrite", "score_labels", "stop"]
        assert not gens[0]["accepted"] and "invalid harness" in gens[0]["reason"] and "syntax" in gens[0]["reason"]
        assert not gens[1]["accepted"] and "fails on every smoke example" in gens[1]["reason"]
        assert "always broken" in gens[1]["reason"]
        # the broken versions are recorded as candidates with their source in git
        assert gens[0]["candidate"] and gens[1]["candidate"]
        assert "raise RuntimeError" in run.source(gens[1]["candidate"])
        third = gens[2]
        assert third["accepted"], third
        assert third["delta"] > 0 and third["p_value"] < 0.05
        assert summary["final"]["harness_version"] != summary["baseline"]["harness_version"]
        assert summary["final"]["test"] is not None and summary["baseline"]["test"] is not None
        # the agent only ever saw train examples
        for state in agent.seen_states:
            assert all(ex.split == "train" for ex in state.train)
        # test rollouts exist only for the baseline and the final champion
        test_cands = {r.candidate_id for r in store.rollouts(split="test")}
        assert test_cands == {summary["baseline"]["candidate"], summary["final"]["candidate"]}
        assert store.generations()[2].proposal["rationale"] == "calibrated label scoring"
    # rollback to the baseline is recorded, and an unaccepted version is refused
    s = rollback(tmp_path / "run", "h0")
    assert s["final"]["harness_version"] == "h0"
    assert s["champions"][-1]["reason"].startswith("rollback")
    from sia.errors import StoreError

    with pytest.raises(StoreError, match="never an accepted version"):
        rollback(tmp_path / "run", gens[1]["candidate"])


def test_builtin_agent_proposes_real_code_edits_from_evidence(tmp_path, runtime):
    """One generation of the builtin agent: its proposal is a template harness whose code changed."""
    task = load_task("sentiment")
    config = RunConfig(task="sentiment", budget=900, val_limit=40, test_limit=8, analysis_examples=16, max_generations=1)
    with new_run(tmp_path / "run", config) as run:
        summary = Loop(run, runtime, config).run()
        gen = summary["generations"][0]
        assert gen["lever"] == "harness" and gen["rationale"]
        new = run.source(gen["candidate"])
        old = run.store.harness_source("h0")
        assert new != old and read_config(new) is not None
        row = run.store.generations()[0].proposal
        assert row["analysis"]["n"] == 16 and row["ranking"]
    assert summary["stop_reason"].startswith("generation budget")
