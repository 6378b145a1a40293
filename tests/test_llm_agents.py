"""LLM Meta- and Feedback-Agents in real runs on the embedded model, answered from recorded OpenAI and Anthropic responses.

The recordings stand in for the hosted APIs only; the SDKs, the loop, the
sandbox, the gate and the trainer are the real ones.
"""

import json

import pytest
from agent_recordings import anthropic_reply, openai_rate_limit, openai_reply, write

from sia.api import resume, run
from sia.harness.template import make_config, render
from sia.store.store import Store
from sia.task.loading import load_task

SMALL = {"val_limit": 24, "test_limit": 8, "analysis_examples": 8, "tau": 0.0, "alpha": 0.2}


def _requests(store, role):
    return [json.loads(c.request) for c in store.agent_calls(role)]


@pytest.mark.model
def test_openai_feedback_agent_rewrite_accepted_fuzzy_edit_guard_and_exact_replay(tmp_path):
    task = load_task("sentiment")
    template = render(make_config(task.public_info()))
    scoring = render(make_config(task.public_info(), mode="score", calibrate=True))
    fuzzy = ('DECISION: harness\nRATIONALE: a less loaded content-free input should calibrate the bias better.\n'
             '<<<<<<< SEARCH\ndef content_free_scores(ctx):\n    """Each label\'s score on an empty input."""\n'
             '    return label_scores(ctx, build_messages({CONFIG["input_field"]: "N/A"}))\n=======\n'
             'def content_free_scores(ctx):\n    """Each label\'s score on a content-free input."""\n'
             '    return label_scores(ctx, build_messages({CONFIG["input_field"]: "[no review]"}))\n>>>>>>> REPLACE\n')
    cheat = template.replace('"""Harness generated', 'GOLD = open("/data/sentiment/labels.jsonl").read()\n"""Harness generated', 1)
    recording = write(tmp_path / "openai.jsonl", [
        ("meta", openai_rate_limit()),
        ("meta", openai_reply(f"Here is the harness.\n```python\n{template}```\n")),
        ("feedback", openai_reply("DECISION: harness\nRATIONALE: 40% of answers are wrong and predictions collapse onto one label;"
                                  f" score each label by likelihood, calibrated.\n```python\n{scoring}```\n")),
        ("feedback", openai_reply(fuzzy)),
        ("feedback", openai_reply(f"DECISION: harness\nRATIONALE: look the answers up.\n```python\n{cheat}```\n")),
        ("feedback", openai_reply("DECISION: stop\nRATIONALE: the remaining ideas are not supported by the evidence.")),
    ])
    opts = dict(levers="harness", feedback="llm", feedback_model="openai:gpt-4.1", max_generations=6, **{**SMALL, "val_limit": 16})
    first = run("sentiment", budget="20m", run_dir=tmp_path / "a", replay=recording, **opts)
    gens = first["generations"]
    assert [g["kind"] for g in gens] == ["llm_rewrite", "llm_edit", "llm_rewrite", "stop"]
    assert gens[0]["accepted"] and gens[0]["delta"] > 0, gens[0]
    assert "edits placed: fuzzy" in gens[1]["rationale"]
    assert not gens[2]["accepted"] and "refused by guards" in gens[2]["reason"] and "labels.jsonl" in gens[2]["reason"]
    assert first["stop_reason"].startswith("Feedback-Agent stopped: LLM Feedback-Agent: the remaining ideas")
    assert first["final"]["test"] is not None and first["final"]["harness_version"] != first["baseline"]["harness_version"]
    with Store(tmp_path / "a", write=False) as store:
        assert [c.status for c in store.agent_calls("meta")] == [429, 200], "the rate-limited call was retried"
        assert "[no review]" in store.harness_source(store.candidate(gens[1]["candidate"]).harness_version)
        baseline = store.candidate(first["baseline"]["candidate"])
        assert baseline.rationale.startswith("Meta-Agent openai:gpt-4.1: written from the task description (attempt 1)")
        sent = json.dumps(_requests(store, "feedback") + _requests(store, "meta"))
        assert "## Failure clusters" in sent and "## Design memory" in sent
        assert not [e.id for e in task.split("test") if e.id in sent], "no test example reaches an agent"
    # the run repeats exactly from its own store, with no model behind the agents
    again = run("sentiment", budget="20m", run_dir=tmp_path / "b", replay=str(tmp_path / "a"), **opts)
    keys = ("kind", "accepted", "delta", "p_value", "n", "reason")
    assert [[g[k] for k in keys] for g in again["generations"]] == [[g[k] for k in keys] for g in gens]
    assert again["final"]["test"] == first["final"]["test"]
    with Store(tmp_path / "b", write=False) as store:
        assert all(c.replayed for c in store.agent_calls()) and len(store.agent_calls()) == 6


@pytest.mark.model
def test_anthropic_feedback_agent_repairs_uses_a_tool_trains_weights_and_stops_when_the_budget_is_spent(tmp_path):
    small = {"rounds": 1, "examples": 4, "samples": 4, "steps": 1, "prompts_per_step": 2}
    recording = write(tmp_path / "anthropic.jsonl", [
        ("feedback", anthropic_reply("I think the model itself needs training.")),
        ("feedback", anthropic_reply('TOOL: trajectories {"cluster": "wrong", "n": 2}')),
        ("feedback", anthropic_reply("DECISION: weights\nRATIONALE: the answers are well-formed but wrong, a prompt cannot fix "
                                     f"the model's bias.\n```json\n{json.dumps({'algorithm': 'grpo', 'config': small})}\n```")),
        ("feedback", anthropic_reply("DECISION: stop\nRATIONALE: asked only after the budget was raised.")),
    ])
    summary = run("sentiment", budget="20m", run_dir=tmp_path / "run", replay=recording, levers="harness,weights",
                  feedback="llm", feedback_model="anthropic:claude-sonnet-4-6", meta_model="template", agent_budget_tokens=7000,
                  max_generations=4, **SMALL)
    gens = summary["generations"]
    assert len(gens) == 1 and gens[0]["lever"] == "weights" and gens[0]["kind"] == "grpo"
    assert "agent token budget spent (7350 of 7000 tokens)" in summary["stop_reason"]
    assert summary["status"] == "done" and summary["final"]["test"] is not None, "the run ends with its state saved and scored"
    with Store(tmp_path / "run", write=False) as store:
        assert (store.adapter_path("a1") / "adapter_config.json").is_file(), "the weight decision ran the trainer"
        reqs = _requests(store, "feedback")
        assert len(reqs) == 3 and all(r["model"] == "claude-sonnet-4-6" and r["system"].startswith("You are the Feedback-Agent")
                                      for r in reqs)
        assert "could not be used: no 'DECISION" in reqs[1]["messages"][-1]["content"]
        tool_result = reqs[2]["messages"][-1]["content"]
        assert tool_result.startswith("Result of trajectories") and "### rollout" in tool_result
        assert store.agent_usage()[0] == 7350
    # raising the budget continues the stopped run; the replay goes on after the calls it already answered
    resumed = resume(tmp_path / "run", agent_budget_tokens=20000)
    assert resumed["stop_reason"] == "Feedback-Agent stopped: LLM Feedback-Agent: asked only after the budget was raised."
    assert [g["kind"] for g in resumed["generations"]] == ["grpo", "stop"]


VERIFY_AND_REPAIR = '''import importlib
import sys


def helper_of(ctx):
    for name, text in ctx.task["files"].items():
        (ctx.scratch / name).write_text(text)
    sys.path.insert(0, str(ctx.scratch))
    return importlib.import_module(ctx.task["helper"])


def solve(example, ctx):
    helper = helper_of(ctx)
    messages = [{"role": "user", "content": helper.describe(example)}]
    for attempt in range(2):
        reply = ctx.llm.chat(messages, max_tokens=16).text
        result = helper.check(example, reply, ctx.seed)
        ctx.log("checked the model's program", attempt=attempt, ok=result["ok"], error=result["error"][:200])
        if result["ok"]:
            return reply
        messages += [{"role": "assistant", "content": reply},
                     {"role": "user", "content": "That failed: " + result["error"][:300] + ". Fix it."}]
    return helper.baseline(example)
'''


@pytest.mark.model
def test_a_verify_and_repair_rewrite_for_trimul_is_accepted_with_a_gain(tmp_path):
    """The LLM Feedback-Agent on a program task: its harness checks the model's kernel locally, asks for a repair, and falls back."""
    naive = "def solve(example, ctx):\n    return 'def custom_kernel(data):\\n    return data[0]\\n'\n"
    recording = write(tmp_path / "rec.jsonl", [
        ("meta", openai_reply(f"A first harness.\n```python\n{naive}```\n")),
        ("feedback", openai_reply("DECISION: harness\nRATIONALE: every program fails the grader's check; verify each one locally "
                                  f"against the public reference, show the model the error, and fall back.\n```python\n"
                                  f"{VERIFY_AND_REPAIR}```\n")),
        ("feedback", openai_reply("DECISION: stop\nRATIONALE: done.")),
    ])
    summary = run("trimul", budget="20m", run_dir=tmp_path / "run", replay=recording, levers="harness", feedback="llm",
                  feedback_model="openai:gpt-4.1", val_limit=3, test_limit=1, analysis_examples=1, smoke_examples=1,
                  max_generations=2, alpha=0.2, alpha_scope="gate")  # on 3 examples a paired p-value is 1/8 at least
    gen = summary["generations"][0]
    assert gen["kind"] == "llm_rewrite" and gen["accepted"] and gen["delta"] > 0.3, gen
    assert summary["baseline"]["test"] == 0.0 and summary["final"]["test"] > 0.3, summary["final"]
