"""The loop with the real model on a small slice of the sentiment task."""

import pytest
from conftest import new_run

from sia.api import rollback
from sia.harness.template import read_config
from sia.loop.config import RunConfig
from sia.loop.loop import Loop
from sia.store.run import Run


def test_broken_edits_are_rejected_with_reasons_and_the_loop_goes_on(scripted_run):
    run_dir, summary, agent = scripted_run
    with Run.open(run_dir) as run:
        store = run.store
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
        # the run's alpha is shared by its gated attempts: the first gated one (generation 3) tested at alpha/2
        assert gens[0]["alpha"] is None and gens[1]["alpha"] is None and third["alpha"] == pytest.approx(0.025)
        control = summary["error_control"]
        assert control["scope"] == "run" and control["gates"] == [pytest.approx(0.025)]
        assert "run-wide false-accept rate at most 0.05" in control["guarantee"]
        assert "changed only the harness" in summary["attribution"]["skipped"]  # a one-lever champion: no 2x2
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
    s = rollback(run_dir, "h0")
    assert s["final"]["harness_version"] == "h0"
    assert s["champions"][-1]["reason"].startswith("rollback")
    from sia.errors import StoreError

    with pytest.raises(StoreError, match="never an accepted version"):
        rollback(run_dir, gens[1]["candidate"])


def test_builtin_agent_proposes_real_code_edits_from_evidence(tmp_path, runtime):
    """One generation of the builtin agent: its proposal is a template harness whose code changed."""
    config = RunConfig(task="sentiment", budget=900, val_limit=24, test_limit=8, analysis_examples=16, max_generations=1)
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


def test_a_long_generation_does_not_end_a_run_that_has_time_for_a_short_one():
    """The loop starts another generation while the budget holds the final test and the shortest generation so far; the
    Feedback-Agent then prices each change against what is left."""
    from types import SimpleNamespace

    gens = [SimpleNamespace(seconds=590.0), SimpleNamespace(seconds=60.0), SimpleNamespace(seconds=None)]
    config = SimpleNamespace(levers=("weights",), smoke_examples=2, gate=SimpleNamespace(chunk=40))
    loop = SimpleNamespace(store=SimpleNamespace(generations=lambda: gens), config=config, val=[0] * 200,
                           _analysis_size=lambda c: 48, budget=SimpleNamespace(seconds_for=lambda n, c: 0.5 * n))
    assert Loop._generation_estimate(loop, "c0") == 60.0
    # with the harness lever, a harness edit's least rollouts (48 + 2 + 40 at 0.5 s) bound it even when every
    # generation so far was a long weight update
    config.levers = ("harness", "weights")
    gens[1].seconds = 356.0
    assert Loop._generation_estimate(loop, "c0") == 45.0
