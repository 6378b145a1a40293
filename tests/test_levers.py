"""A third lever is one file plus registration: no edit to the loop, and it is stored, gated and resumable like the others."""

from dataclasses import dataclass, replace

import pytest
from conftest import ScriptedAgent, new_run

import sia.loop.levers as levers_module
from sia.agents.proposal import from_dict, to_dict
from sia.errors import SiaError
from sia.harness.template import read_config, render
from sia.loop.config import RunConfig, from_flat
from sia.loop.levers import Challenger, LeverContext, register
from sia.loop.loop import Loop


@dataclass(frozen=True)
class PrefixProposal:
    """The toy lever's proposal: put a fixed prefix before every input."""

    prefix: str
    rationale: str = "toy"
    kind: str = "prefix"
    lever: str = "prefix"


class PrefixLever:
    """A toy lever: a new harness version whose inputs carry a prefix (a stand-in for, say, a retrieval memory)."""

    name = "prefix"
    proposal_type = PrefixProposal

    def challenger(self, ctx: LeverContext, gen: int, champion: str, proposal: PrefixProposal) -> Challenger:
        cfg = read_config(ctx.run.source(champion))
        if cfg is None:
            return Challenger(None, refused="the champion is not a template harness")
        source = render(replace(cfg, input_prefix=proposal.prefix))
        version = ctx.store.add_harness_version(source, proposal.rationale)
        ctx.observer.on_phase(f"prefix lever: {proposal.prefix!r}")
        return Challenger(ctx.store.add_candidate(version, ctx.run.adapter(champion), self.name, proposal.rationale, champion))


@pytest.fixture
def prefix_lever(monkeypatch):
    monkeypatch.setattr(levers_module, "_EXTRA", {})
    return register(PrefixLever())


def test_an_unregistered_lever_is_refused_by_name():
    with pytest.raises(SiaError, match="unknown lever.*prefix"):
        from_flat(task="sentiment", levers="harness,prefix")


def test_a_registered_toy_lever_runs_through_the_unchanged_loop(prefix_lever, tmp_path, runtime):
    config = from_flat(task="sentiment", levers="harness,prefix", budget=900, val_limit=12, test_limit=4, analysis_examples=4,
                       max_generations=2)
    assert config.levers == ("harness", "prefix")
    agent = ScriptedAgent([PrefixProposal("Review: "), PrefixProposal("Movie review: ")])
    with new_run(tmp_path / "run", config) as run:
        summary = Loop(run, runtime, config, agent=agent).run()
        gens = summary["generations"]
        assert [g["lever"] for g in gens] == ["prefix", "prefix"]
        assert all(g["n"] for g in gens), "every toy challenger faced the gate"
        assert "Review: " in run.source(gens[0]["candidate"])
        stored = run.store.generations()[0].proposal
        assert from_dict(stored, {"prefix": PrefixProposal}) == PrefixProposal("Review: ")
    assert to_dict(PrefixProposal("x"))["lever"] == "prefix"


def test_run_config_is_checked_in_one_place_with_the_option_to_fix():
    for bad, needle in [({"levers": ""}, "--levers: no lever named"), ({"tau": -1}, "--tau"), ({"alpha": 7}, "--alpha"),
                        ({"timeout": -5}, "--timeout"), ({"budget": "ten minutes"}, "--budget: cannot read the duration"),
                        ({"levers": "harness,magic"}, "unknown lever(s) magic")]:
        with pytest.raises(SiaError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            from_flat(task="sentiment", **bad)
    c = from_flat(task="sentiment", budget="1h30m", tau=0.02, seed=3, feedback="llm", feedback_model="openai:gpt-4.1")
    assert c.budget == 5400 and c.gate.tau == 0.02 and c.gate.seed == 3 and c.levers == ("harness", "weights")
    assert c.agents.meta_spec_spelling == "openai:gpt-4.1", "the LLM Meta-Agent defaults to the feedback model"
    assert RunConfig.model_validate(c.model_dump(mode="json")) == c, "a stored config reads back the same"
    assert from_flat(task="sentiment", task_model="openai:m@http://127.0.0.1:9/v1").levers == ("harness",)
