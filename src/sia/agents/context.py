"""What an LLM Feedback-Agent reads: the evidence assembled within a token budget, and tools to fetch more.

Sections in the order they are kept when the budget is short: the task, the
levers and their costs, the metrics, the current harness, the design memory,
the training curves of past weight updates, then failure clusters with sampled
trajectories, filled until the budget is spent. Only train rollouts are shown:
validation belongs to the gate and test to the report.

Tokens are estimated, not counted: a character outside ASCII (CJK) as one
token and four ASCII characters as one. That overestimates English a little,
which is the safe side for a budget, and needs no tokenizer of the agent model.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sia.agents.contract import AgentState
from sia.agents.costs import harness_cost, weights_cost
from sia.weights.config import LABEL_PRESET, SAMPLING_PRESET, plan, settings_help


def estimate_tokens(text: str) -> int:
    wide = sum(1 for ch in text if ord(ch) > 127)
    return wide + (len(text) - wide) // 4 + 1


def clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars // 2] + f"\n[... {len(text) - chars} characters cut ...]\n" + text[-chars // 2:]


@dataclass
class Trajectory:
    rollout_id: str
    example_id: str
    outcome: str
    text: str


def render_trajectory(store, row, chars: int = 1500) -> str:
    """One rollout as the agent reads it: each model call's prompt and reply, tool calls, errors, output and grade."""
    parts = [f"### rollout {row.id} (example {row.example_id}, score {row.score})"]
    for ev in store.events(row.id):
        d = ev.data
        if ev.kind == "llm_call":
            if d.get("kind") == "chat":
                prompt = "\n".join(f"[{m.get('role')}] {m.get('content')}" for m in d.get("messages") or [])
                reply = (d.get("completions") or [{}])[0].get("text", "")
                parts.append(f"model call (chat):\n{clip(prompt, chars)}\n-> reply: {clip(reply, chars // 2)!r}")
            elif d.get("kind") == "embed":
                parts.append(f"model call (embed): {d.get('inputs')} text(s)")
            else:
                ps = d.get("prompts") or []
                parts.append(f"model call ({d.get('kind')}): scored {len(ps)} continuation(s); first prompt:\n"
                             f"{clip(ps[0].get('prompt', '') if ps else '', chars)}")
        elif ev.kind in ("tool_call", "log"):
            parts.append(f"{ev.kind}: {clip(json.dumps(d, ensure_ascii=False), 300)}")
        elif ev.kind == "error":
            parts.append(f"error: {clip(str(d), 600)}")
    if row.error_type:
        parts.append(f"harness error ({row.error_type}): {clip(row.error or '', 600)}")
    parts.append(f"output: {json.dumps(row.output, ensure_ascii=False)}\ngrade: {row.feedback}")
    return "\n".join(parts)


class Evidence:
    """The champion's train rollouts grouped into failure clusters; also serves the agent's tools."""

    def __init__(self, state: AgentState, store) -> None:
        self.state, self.store = state, store
        self.rows = {r.id: r for r in store.rollouts(state.analysis_eval)} if state.analysis_eval else {}
        self.clusters: dict[str, list[str]] = defaultdict(list)
        for rid, r in self.rows.items():
            self.clusters[self._cluster(r)].append(rid)

    def _cluster(self, r) -> str:
        if r.error_type:
            return f"error:{r.error_type}"
        if r.passed:
            return "correct"
        return f"wrong: {(r.feedback or '')[:80]}"

    def cluster_summary(self) -> list[tuple[str, int]]:
        return sorted(((k, len(v)) for k, v in self.clusters.items()), key=lambda kv: (kv[0] == "correct", -kv[1]))

    # -- tools ----------------------------------------------------------------------------------
    def tool(self, name: str, args: dict[str, Any]) -> str:
        try:
            if name == "trajectories":
                cluster, n = str(args.get("cluster", "")), max(1, min(int(args.get("n", 3)), 8))
                ids = [rid for k, v in self.clusters.items() if cluster in k for rid in v][:n]
                if not ids:
                    return f"no cluster matches {cluster!r}; clusters: {[k for k, _ in self.cluster_summary()]}"
                return "\n\n".join(render_trajectory(self.store, self.rows[i]) for i in ids)
            if name == "example":
                rid = next((i for i, r in self.rows.items() if r.example_id == args.get("id")), None)
                return render_trajectory(self.store, self.rows[rid], 4000) if rid else f"no train rollout of example {args.get('id')!r}"
            if name == "harness":
                return self.store.harness_source(str(args.get("version")))
        except Exception as e:  # bad arguments or an unknown version: the agent reads the reason
            return f"tool {name} failed: {type(e).__name__}: {e}"
        return f"unknown tool {name!r}; tools: trajectories, example, harness"


def training_curves(store) -> list[str]:
    out = []
    for row in store.adapter_versions():
        path = store.adapter_path(row.version) / "sia_training.json"
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        log = info.get("log") or []
        steps = " ".join(f"{s.get('reward_mean', 0):.2f}" for s in log[:40])
        last = log[-1] if log else {}
        out.append(f"{row.version} ({row.algorithm}, parent {row.parent or 'base'}): config {json.dumps(info.get('config', {}))}; "
                   f"reward mean per step: {steps or 'n/a'}; last step loss {last.get('loss', 'n/a')}, "
                   f"predicted {json.dumps(last.get('predicted', {}), ensure_ascii=False)}")
    return out


def build_context(state: AgentState, store, ev: Evidence, budget_tokens: int, weights_note: str | None = None) -> str:
    """The evidence for one decision, within about `budget_tokens` tokens."""
    task = state.task.public_info()
    a = state.analysis
    sections = [("Task", json.dumps(task, ensure_ascii=False, indent=1))]
    levers = []
    if "harness" in state.levers:
        levers.append(f"- harness: rewrite the harness code; about {harness_cost(state):.1f} min per try (gate included)")
    if "weights" in state.levers and not weights_note:
        ce = ""
        if state.task.labels:
            ce = (f"; ce about {weights_cost(plan('ce', LABEL_PRESET), state):.1f} min with the settings {json.dumps(LABEL_PRESET)}")
        levers.append(f"- weights: train a LoRA adapter on the champion harness's own rollouts (grpo, sft or ce); grpo about "
                      f"{weights_cost(plan('grpo', SAMPLING_PRESET), state):.1f} min with the settings "
                      f"{json.dumps(SAMPLING_PRESET)}{ce}. Every setting a weights decision's config may hold:\n{settings_help()}")
    elif weights_note:
        levers.append(f"- weights: not available ({weights_note})")
    left = f"{state.seconds_left / 60:.1f} min" if state.seconds_left is not None else "unknown"
    levers.append(f"- stop: end the run. Budget left: {left}. Champion adapter: {state.champion_adapter or 'none (base model)'}")
    sections.append(("Levers", "\n".join(levers)))
    metrics = [f"champion validation score: {state.champion_val:.3f} on {state.val_n} examples" if state.champion_val is not None else
               "champion validation score: not yet measured",
               f"champion on {a.n} train examples: {json.dumps(a.summary(), ensure_ascii=False)}"]
    sections.append(("Metrics (the test split is never shown)", "\n".join(metrics)))
    sections.append(("Current harness", f"```python\n{state.champion_source}\n```"))
    mem = state.memory.summary()
    sections.append(("Design memory (earlier generations)", "\n".join(mem[-15:]) or "none yet"))
    curves = training_curves(store)
    if curves:
        sections.append(("Training curves of past weight updates", "\n".join(curves)))
    text = "\n\n".join(f"## {t}\n{b}" for t, b in sections)
    summary = ", ".join(f"{k!r} x{n}" for k, n in ev.cluster_summary())
    text += f"\n\n## Failure clusters of the champion on train\n{summary or 'no rollouts'}\n"
    used = estimate_tokens(text)
    for cluster, _n in ev.cluster_summary():
        if cluster == "correct":
            continue
        for rid in ev.clusters[cluster][:2]:
            block = "\n" + render_trajectory(store, ev.rows[rid]) + "\n"
            cost = estimate_tokens(block)
            if used + cost > budget_tokens:
                return text + "\n[more trajectories: use the trajectories tool]"
            text += block
            used += cost
    return text
