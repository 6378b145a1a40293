"""What an LLM Feedback-Agent answers: decisions parsed, edits placed fuzzily, cheating harnesses refused."""

import pytest

from sia.agents.llm import DecisionError, NeedFullFile, parse_decision
from sia.agents.proposal import HarnessEdit, Stop, WeightUpdate
from sia.harness.edits import EditError, apply_edit, apply_edits, parse_edits
from sia.harness.guards import check_harness
from sia.harness.template import make_config, render
from sia.task.loading import load_task

SRC = '''LABELS = ["positive", "negative"]


def solve(example, ctx):
    text = example["text"]
    reply = ctx.llm.chat(f"Sentiment of: {text}", max_tokens=32)
    answer = reply.text.strip().lower()
    return answer
'''


def test_edits_are_placed_exactly_by_whitespace_or_fuzzily_and_reindented():
    new, how = apply_edit(SRC, "    answer = reply.text.strip().lower()\n", "    answer = reply.text.split()[0].lower()\n")
    assert how == "exact" and "split()[0]" in new
    # quoted without indentation: found ignoring whitespace, re-indented to the function body
    new, how = apply_edit(SRC, "answer = reply.text.strip().lower()\nreturn answer\n", "answer = reply.text[:20]\nreturn answer.strip()\n")
    assert how == "whitespace" and "    answer = reply.text[:20]\n    return answer.strip()\n" in new
    # quoted imperfectly (a changed prompt and max_tokens): placed fuzzily
    text = ("<<<<<<< SEARCH\n    reply = ctx.llm.chat(f\"Sentiment of {text}\", max_tokens=16)\n    answer = reply.text.strip()\n"
            "=======\n    reply = ctx.llm.chat(f\"Is this review positive or negative? {text}\", max_tokens=8)\n"
            "    answer = reply.text.strip().lower()\n>>>>>>> REPLACE\n")
    new, notes = apply_edits(SRC, parse_edits(text))
    assert notes[0].startswith("fuzzy") and "max_tokens=8" in new and "max_tokens=32" not in new
    compile(new, "h.py", "exec")
    with pytest.raises(EditError, match="not found"):
        apply_edit(SRC, "import numpy as np\nx = np.zeros(3)\n", "")
    with pytest.raises(EditError, match="occurs 2 times"):
        apply_edit(SRC + "\n# text = example\n", "text = example", "t = example")


def test_decisions_parse_into_typed_proposals_or_say_what_is_wrong():
    p = parse_decision("DECISION: harness\nRATIONALE: parse the first word.\n```python\n" + SRC + "```\n", SRC, ("harness", "weights"))
    assert isinstance(p, HarnessEdit) and p.kind == "llm_rewrite" and "def solve" in p.source
    p = parse_decision('**DECISION:** weights\nRATIONALE: answers are well-formed but wrong.\n```json\n'
                       '{"algorithm": "GRPO", "config": {"steps": 3}, "data": "train"}\n```', SRC, ("harness", "weights"))
    assert isinstance(p, WeightUpdate) and p.algorithm == "grpo" and p.config == {"steps": 3}
    p = parse_decision('DECISION: weights\nRATIONALE: the votes cost 5 calls.\n```json\n{"algorithm": "ce", "data": "distill"}\n```\n'
                       "```python\n" + SRC + "```\n", SRC, ("harness", "weights"))
    assert isinstance(p, WeightUpdate) and p.data == "distill" and p.kind == "distill" and "def solve" in p.harness
    with pytest.raises(DecisionError, match="student harness"):
        parse_decision('DECISION: weights\nRATIONALE: r\n```json\n{"algorithm": "ce", "data": "distill"}\n```', SRC, ("harness", "weights"))
    assert isinstance(parse_decision("DECISION: stop\nRATIONALE: nothing left to try.", SRC, ("harness",)), Stop)
    for bad, msg in [("I would improve the prompt.", "no 'DECISION"), ("DECISION: harness\n```python\nx=1\n```", "RATIONALE"),
                     ("DECISION: harness\nRATIONALE: r\n```python\nx = 1\n```", "defines no solve"),
                     ("DECISION: weights\nRATIONALE: r\n```json\n{oops}\n```", "does not parse"),
                     ("DECISION: weights\nRATIONALE: r\n```json\n{}\n```", "not available")]:
        with pytest.raises(DecisionError, match=msg):
            parse_decision(bad, SRC, ("harness",) if "not available" in msg else ("harness", "weights"))
    with pytest.raises(NeedFullFile, match="edit 1"):
        parse_decision("DECISION: harness\nRATIONALE: r\n<<<<<<< SEARCH\nfoo = bar(baz)\n=======\nx\n>>>>>>> REPLACE\n", SRC, ("harness",))


def test_guards_refuse_hidden_labels_hard_coded_answers_and_escapes():
    task = load_task("sentiment")
    assert check_harness(render(make_config(task.public_info())), task) == [], "the template passes"
    test_ex, val_ex, train_ex = task.split("test")[0], task.split("val")[0], task.split("train")[0]
    cases = {
        "open('/root/.cache/sia/tasks/sentiment/labels.jsonl').read()": "data file 'labels.jsonl'",
        "import sqlite3": "imports sqlite3",
        "from sia.task.loading import load_task": "imports sia.task.loading",
        "import socket": "network access",
        "import urllib.request": "network access",
        "import subprocess": "process or foreign-code",
        "os.system('curl x')": "os.system",
        "open('../../secret.txt')": "outside the sandbox",
        "example.target": "hidden target",
        f"ANSWERS = {{{test_ex.id!r}: 'positive'}}": "hard-codes test example id",
        f"SEEN = {val_ex.inputs['text'][:60]!r}": f"text of val example {val_ex.id}",
    }
    for code, reason in cases.items():
        found = check_harness(f"import os\n{code}\n\ndef solve(example, ctx):\n    return 'positive'\n", task)
        assert any(reason in r for r in found), (code, found)
    # train text is the agent's to use (few-shot demonstrations)
    assert check_harness(f"DEMO = {train_ex.inputs['text']!r}\n\ndef solve(example, ctx):\n    return 'positive'\n", task) == []


def test_a_model_that_only_calls_tools_ends_in_a_rejected_invalid_proposal(tmp_path):
    from collections import Counter

    from agent_recordings import openai_reply, write

    from sia.agents.clients import AgentModel, Recording, parse_model_spec
    from sia.agents.contract import AgentState
    from sia.agents.llm import LLMAgentConfig, LLMFeedbackAgent
    from sia.agents.proposal import Invalid
    from sia.evaluation.analysis import Analysis
    from sia.store.memory import Memory
    from sia.store.store import Store

    task = load_task("sentiment")
    rec = Recording.load(write(tmp_path / "r.jsonl", [("feedback", openai_reply('TOOL: harness {"version": "h0"}'))] * 6))
    with Store(tmp_path / "run") as store:
        store.add_harness_version(SRC, "test")
        model = AgentModel(parse_model_spec("openai:gpt-4.1"), "feedback", store, recording=rec)
        agent = LLMFeedbackAgent(model, store, LLMAgentConfig(tool_rounds=3, repairs=1))
        state = AgentState(task, SRC, Analysis(0, 0.0, Counter(), Counter(), Counter(), Counter()), Memory(), task.split("train"),
                           levers=("harness",))
        decision = agent.decide(state)
        p = decision.proposal
        assert isinstance(p, Invalid) and "no tool calls left (3 used)" in p.reason
        assert len(store.agent_calls()) == 5, "3 tool rounds, then one repair, then it gives up"
        assert "def solve(example, ctx)" in decision.transcript[2]["content"], "the harness tool returned the stored source"
