"""Agent model clients: the model spelling, keys, prices, and recorded exchanges replayed through the real SDKs."""

import json
import subprocess

import pytest
from agent_recordings import anthropic_overloaded, anthropic_reply, openai_rate_limit, openai_reply, write
from conftest import SIA

from sia.agents.clients import (
    AgentBudget,
    AgentBudgetSpent,
    AgentModel,
    AgentModelConfig,
    AgentModelError,
    Recording,
    ReplayExhausted,
    api_key,
    parse_model_spec,
    parse_prices,
    price_of,
)
from sia.store.store import Store


def test_one_spelling_names_every_model():
    assert parse_model_spec("anthropic:claude-sonnet-4-6") == parse_model_spec("anthropic:claude-sonnet-4-6")
    s = parse_model_spec("openai:gpt-4.1@https://host/v1")
    assert (s.provider, s.model, s.base_url, s.local) == ("openai", "gpt-4.1", "https://host/v1", False)
    assert parse_model_spec("openai:qwen@http://127.0.0.1:8000/v1").local
    for bad in ("claude-sonnet-4-6", "google:gemini", "openai:", "openai:x@ftp://h"):
        with pytest.raises(AgentModelError):
            parse_model_spec(bad)


def test_a_missing_key_names_the_variable_to_set():
    with pytest.raises(AgentModelError, match="ANTHROPIC_API_KEY is not set"):
        api_key(parse_model_spec("anthropic:claude-sonnet-4-6"), env={})
    with pytest.raises(AgentModelError, match="OPENAI_API_KEY is not set"):
        api_key(parse_model_spec("openai:gpt-4.1"), env={})
    assert api_key(parse_model_spec("openai:gpt-4.1"), env={"OPENAI_API_KEY": "sk-x"}) == "sk-x"
    assert api_key(parse_model_spec("openai:llama@http://localhost:8080/v1"), env={}) == "not-needed"


def test_cli_says_which_variable_to_set_in_one_line(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "SIA_API_KEY")}
    r = subprocess.run([SIA, "run", "sentiment", "--feedback", "llm", "--feedback-model", "anthropic:claude-sonnet-4-6",
                        "--run-dir", str(tmp_path / "r")], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "ANTHROPIC_API_KEY" in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "r").exists(), "nothing is started before the settings are checked"


def test_prices_default_table_family_names_and_overrides():
    prices = parse_prices(["my-model=1,2"])
    assert price_of(parse_model_spec("anthropic:claude-sonnet-4-6-20261001"), prices) == (3.0, 15.0)
    assert price_of(parse_model_spec("openai:my-model@https://h/v1"), prices) == (1.0, 2.0)
    assert price_of(parse_model_spec("openai:unknown-model"), prices) is None
    assert price_of(parse_model_spec("openai:unknown@http://localhost:1/v1"), prices) == (0.0, 0.0)
    with pytest.raises(AgentModelError, match="MODEL=IN,OUT"):
        parse_prices(["gpt-4.1=two"])


def test_openai_rate_limit_is_retried_and_every_exchange_is_recorded(tmp_path):
    rec = Recording.load(write(tmp_path / "r.jsonl", [("feedback", openai_rate_limit()), ("feedback", openai_reply("hello", 1000, 100))]))
    with Store(tmp_path / "run") as store:
        m = AgentModel(parse_model_spec("openai:gpt-4.1"), "feedback", store, AgentModelConfig(max_tokens=64), rec)
        assert m.chat("be brief", [{"role": "user", "content": "hi"}]) == "hello"
        calls = store.agent_calls()
        assert [c.status for c in calls] == [429, 200], "the 429 and its retry are both in the store"
        req = json.loads(calls[1].request)
        assert req["model"] == "gpt-4.1" and req["messages"][0] == {"role": "system", "content": "be brief"}
        assert "Authorization" not in calls[1].request and "replay" not in calls[1].headers
        tokens, usd = store.agent_usage()
        assert tokens == 1100 and usd == pytest.approx((1000 * 2.0 + 100 * 8.0) / 1e6)
        with pytest.raises(ReplayExhausted, match="no more feedback calls"):
            m.chat("be brief", [{"role": "user", "content": "again"}])


def test_anthropic_shapes_and_the_budget(tmp_path):
    rec = Recording.load(write(tmp_path / "r.jsonl", [("meta", anthropic_overloaded()), ("meta", anthropic_reply("one", 900, 200)),
                                                      ("meta", anthropic_reply("two"))]))
    with Store(tmp_path / "run") as store:
        conf = AgentModelConfig(budget=AgentBudget(tokens=1000))
        m = AgentModel(parse_model_spec("anthropic:claude-sonnet-4-6"), "meta", store, conf, rec)
        assert m.chat("sys", [{"role": "user", "content": "hi"}]) == "one"
        req = json.loads(store.agent_calls()[-1].request)
        assert req["system"] == "sys" and req["messages"] == [{"role": "user", "content": "hi"}]
        with pytest.raises(AgentBudgetSpent, match="1100 of 1000 tokens"):
            m.chat("sys", [{"role": "user", "content": "more"}])
        assert len(store.agent_calls()) == 2, "a call past the budget is never sent"


def test_a_money_budget_needs_a_price(tmp_path):
    with Store(tmp_path / "run") as store, pytest.raises(AgentModelError, match="--price mystery"):
        AgentModel(parse_model_spec("openai:mystery@https://h/v1"), "feedback", store,
                   AgentModelConfig(budget=AgentBudget(usd=1.0)), Recording([]))


def test_a_remote_task_model_cannot_take_the_weights_lever(tmp_path):
    r = subprocess.run([SIA, "run", "sentiment", "--task-model", "openai:qwen@http://127.0.0.1:9/v1", "--levers", "harness,weights",
                        "--run-dir", str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode != 0 and len(lines) == 1 and "remote" in lines[0] and "--levers harness" in lines[0], r.stderr
