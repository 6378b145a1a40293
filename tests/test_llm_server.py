"""End to end: `sia run --feedback llm` against a real OpenAI-compatible server on loopback (sia's policy service).

The embedded 135M model writes poor harnesses and malformed decisions: the
point is that the whole path works (Meta-Agent, Feedback-Agent, repairs,
guards, gate) and that what it proposes is rejected cleanly, with reasons.
"""

import json
import os
import subprocess

from conftest import SIA

from sia.store.store import Store


def test_sia_run_with_an_llm_feedback_agent_on_a_local_openai_compatible_server(tmp_path, runtime):
    spec = f"openai:{runtime.model_name()}@{runtime.service.url}"
    run_dir = tmp_path / "run"
    r = subprocess.run([SIA, "run", "sentiment", "--feedback", "llm", "--feedback-model", spec, "--levers", "harness",
                        "--max-generations", "1", "--val-limit", "8", "--test-limit", "4", "--analysis-examples", "4",
                        "--agent-max-tokens", "64", "--agent-context-tokens", "1000", "--agent-repairs", "0",
                        "--meta-attempts", "1", "--run-dir", str(run_dir), "--json"], capture_output=True, text=True, timeout=900,
                       env={**os.environ, "OPENAI_API_KEY": runtime.service.api_key})
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)
    gens = summary["generations"]
    assert summary["status"] == "done" and summary["final"]["test"] is not None
    assert len(gens) == 1
    for g in gens:
        assert g["reason"], g  # every outcome, accepted or not, says why
        if not g["accepted"] and g["kind"] != "stop":
            print(f"generation {g['generation']} rejected: {g['reason'][:200]}")
    with Store(run_dir, write=False) as store:
        calls = store.agent_calls()
        roles = {c.role for c in calls}
        assert roles == {"meta", "feedback"} and all(c.status == 200 for c in calls)
        assert all(c.input_tokens > 0 and c.output_tokens > 0 and c.cost == 0 for c in calls), "usage is accounted, free"
        assert all(json.loads(c.request)["model"] == runtime.model_name() for c in calls)
        baseline = store.candidate(summary["baseline"]["candidate"])
        why = baseline.rationale
        assert why.startswith(("Meta-Agent openai:", "Meta-Agent template: the LLM's 1 harness(es) failed validation")), why
