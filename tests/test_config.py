"""One config tree, written once: `sia run --help` comes from its fields, and the LLM agent's weight settings from the trainer's."""

import os
import re
import subprocess

import pytest
from conftest import SIA

from sia.agents.context import build_context
from sia.errors import SiaError
from sia.loop.config import RunConfig, leaf_fields, option_name
from sia.weights.config import WeightPlan, plan, setting_fields, settings_help


def test_sia_run_help_is_generated_from_the_config_fields():
    r = subprocess.run([SIA, "run", "--help"], capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "400"})
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    offered = [(option_name(p, f), f) for p, f in leaf_fields(RunConfig)
               if not (isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("cli") in (False, "argument"))]
    names = [n for n, _ in offered]
    assert len(names) == len(set(names)), "option names are unique across the tree"
    for name, f in offered:
        assert f"--{name.replace('_', '-')}" in text, name
        first_words = " ".join(f.description.split()[:4])
        assert first_words in text, (name, first_words)


def test_every_weight_setting_shown_to_the_llm_agent_is_accepted_key_by_key():
    listed = re.findall(r"^- (\w+) \(default (.*?)\): ", settings_help(), re.M)
    assert {k for k, _ in listed} == set(setting_fields()), "the list covers every setting and nothing else"
    for key, default in listed:
        value = setting_fields()[key].get_default(call_default_factory=True)
        assert repr(value) == default
        wp = plan("grpo", {key: value})
        assert isinstance(wp, WeightPlan), key
    assert "aggregation" in dict(listed) and "loss_agg" not in dict(listed)
    assert plan("ce", {"epochs": 2.0, "prompts_per_step": 16}, "distill").train.steps_for(128) == 16
    with pytest.raises(SiaError, match="distillation trains by ce"):
        plan("grpo", {}, "distill")


def test_the_llm_agents_evidence_lists_the_generated_settings(tmp_path):
    from collections import Counter

    from sia.agents.contract import AgentState
    from sia.evaluation.analysis import Analysis
    from sia.store.memory import Memory
    from sia.store.store import Store
    from sia.task.loading import load_task

    task = load_task("sentiment")
    state = AgentState(task, "def solve(e, ctx):\n    return 'x'\n", Analysis(0, 0.0, Counter(), Counter(), Counter(), Counter()),
                       Memory(), task.split("train"), levers=("harness", "weights"))
    with Store(tmp_path / "run") as store:
        from sia.agents.context import Evidence

        text = build_context(state, store, Evidence(state, store), 16000)
    assert settings_help() in text


def test_eval_run_and_the_api_share_one_option_model():
    """`sia eval`, `sia run` and `sia.evaluate()`/`sia.run()` read the same fields, so their defaults cannot drift (eval's
    concurrency was 8 against run's 16)."""
    import subprocess

    import pytest
    from conftest import SIA

    from sia.api import evaluate
    from sia.errors import SiaError
    from sia.evaluation.options import EvalOptions, ExecutionOptions
    from sia.loop.config import RunConfig

    shared = set(ExecutionOptions.model_fields)
    assert shared <= set(RunConfig.model_fields) and shared <= set(EvalOptions.model_fields)
    assert all(EvalOptions.model_fields[k].default == RunConfig.model_fields[k].default for k in shared)
    wide = {"COLUMNS": "200", "PATH": ""}
    help_text = subprocess.run([SIA, "eval", "--help"], capture_output=True, text=True, timeout=60, env=wide).stdout
    for name in EvalOptions.model_fields:
        if name != "task":
            assert f"--{name.replace('_', '-')}" in help_text, name
    with pytest.raises(SiaError, match="--concurrency"):
        evaluate("sentiment", concurrency=0)
    with pytest.raises(SiaError, match="--colour"):
        evaluate("sentiment", colour="blue")
