"""The LLM Feedback-Agent: a configured model reads the evidence and answers with a structured decision.

The conversation: a system prompt (the harness API, the tools, the answer
format) and the evidence from `sia.agents.context`. The model may first call
tools, one per turn, to read more trajectories; then it answers

    DECISION: harness | weights | stop
    RATIONALE: ...
    a ```python block (the whole new harness), or SEARCH/REPLACE edits,
    or a ```json block {"algorithm": ..., "config": {...}, "data": "train"}

The tool protocol is plain text rather than the providers' native tool
calling, on purpose: it works the same on OpenAI, Anthropic and every local
server (llama.cpp and Ollama support native tools only for some models and
flags), and it is what a replay needs to repeat exactly.

A malformed answer is shown its error and asked again, `repairs` times. Edits
that cannot be placed (see `sia.harness.edits`) fall back to asking for the whole
file. What still fails becomes an `Invalid` proposal, which the loop records
as rejected with its reason. Everything valid goes through the same guards
and gate as the builtin agent's proposals.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from sia.agents.clients import AgentModel
from sia.agents.context import Evidence, build_context
from sia.agents.contract import AgentState, Decision
from sia.agents.proposal import HarnessEdit, Invalid, Proposal, Stop, WeightUpdate
from sia.agents.texts import prompt
from sia.harness.edits import EditError, apply_edits, parse_edits


def system_prompt() -> str:
    """The Feedback-Agent's system prompt: the harness API, the tools and the answer format."""
    return prompt("feedback_system", harness_api=prompt("harness_api"))


DECISION_RE = re.compile(r"^\W*DECISION\W*:?\s*\**\s*(harness|weights|stop)\b", re.I | re.M)
RATIONALE_RE = re.compile(r"^\W*RATIONALE\W*:?\s*(.+?)(?=^```|^<{5,}|\Z)", re.I | re.M | re.S)
TOOL_RE = re.compile(r"^\s*TOOL:\s*(\w+)\s*(\{.*\})?\s*$", re.M | re.S)
FENCE_RE = re.compile(r"```(\w*)[ \t]*\n(.*?)(?:```|\Z)", re.S)  # a reply cut at max_tokens leaves the fence open


class DecisionError(ValueError):
    pass


class NeedFullFile(DecisionError):
    """SEARCH/REPLACE edits that cannot be placed: ask for the whole file."""


@dataclass
class LLMAgentConfig:
    context_tokens: int = 16000
    """Token budget of the evidence shown to the model."""
    tool_rounds: int = 3
    """Tool calls allowed before the model must decide."""
    repairs: int = 2
    """Times a malformed answer is shown its error and asked again."""


def parse_decision(text: str, champion_source: str, levers: tuple[str, ...]) -> Proposal:
    """The proposal in a decision reply; raises DecisionError saying what is wrong."""
    m = DECISION_RE.search(text)
    if not m:
        raise DecisionError("no 'DECISION: harness | weights | stop' line")
    kind = m.group(1).lower()
    r = RATIONALE_RE.search(text)
    rationale = " ".join(r.group(1).split())[:2000] if r else ""
    if not rationale:
        raise DecisionError("no 'RATIONALE:' line")
    if kind == "stop":
        return Stop(f"LLM Feedback-Agent: {rationale}")
    if kind not in levers:
        raise DecisionError(f"the {kind} lever is not available in this run (levers: {', '.join(levers)})")
    fences = FENCE_RE.findall(text)
    if kind == "weights":
        blocks = [b for lang, b in fences if lang.lower() in ("json", "")]
        if not blocks:
            raise DecisionError("a weights decision needs one ```json block")
        try:
            d = json.loads(blocks[0])
        except ValueError as e:
            raise DecisionError(f"the ```json block does not parse: {e}") from None
        if not isinstance(d, dict) or not isinstance(d.get("algorithm"), str) or not isinstance(d.get("config", {}), dict):
            raise DecisionError('the ```json block must be {"algorithm": "grpo"|"sft"|"ce", "config": {...}, "data": "train"}')
        algo, data = d["algorithm"].lower(), str(d.get("data", "train"))
        student = None
        if data == "distill":
            if "harness" not in levers:
                raise DecisionError("a distillation changes the harness too; the harness lever is not available in this run")
            code = [b for lang, b in fences if lang.lower() in ("python", "py")]
            if not code or "def solve" not in max(code, key=len):
                raise DecisionError("a distillation needs a ```python block with the whole cheaper student harness (with solve)")
            student = max(code, key=len)
        return WeightUpdate(algorithm=algo, config=d.get("config") or {}, data=data, harness=student,
                            rationale=f"LLM Feedback-Agent: {rationale}", kind="distill" if student else algo)
    edits = parse_edits(text)
    if edits:
        try:
            source, how = apply_edits(champion_source, edits)
        except EditError as e:
            raise NeedFullFile(str(e)) from None
        return HarnessEdit(source=source, rationale=f"LLM Feedback-Agent: {rationale} [edits placed: {', '.join(how)}]",
                           kind="llm_edit")
    code = [b for lang, b in fences if lang.lower() in ("python", "py", "")]
    if not code:
        raise DecisionError("a harness decision needs a ```python block with the whole file, or SEARCH/REPLACE edits")
    source = max(code, key=len)
    if "def solve" not in source:
        raise DecisionError("the ```python block defines no solve(example, ctx)")
    return HarnessEdit(source=source, rationale=f"LLM Feedback-Agent: {rationale}", kind="llm_rewrite")


class LLMFeedbackAgent:
    """`decide(state) -> Decision` by asking a model; see the module docstring for the conversation."""

    def __init__(self, model: AgentModel, store, config: LLMAgentConfig | None = None,
                 weights_note: str | None = None) -> None:
        self.model, self.store = model, store
        self.config = config or LLMAgentConfig()
        self.weights_note = weights_note
        self.name = model.spec.spelling

    def decide(self, state: AgentState) -> Decision:
        levers = tuple(lv for lv in state.levers if not (lv == "weights" and self.weights_note))
        evidence = Evidence(state, self.store)
        context = build_context(state, self.store, evidence, self.config.context_tokens, self.weights_note)
        messages = [{"role": "user", "content": context + "\n\nDecide the next change (or call a tool first)."}]
        tools_left, repairs_left = self.config.tool_rounds, self.config.repairs
        while True:
            reply = self.model.chat(system_prompt(), messages)
            messages.append({"role": "assistant", "content": reply})
            tool = TOOL_RE.search(reply)
            if tool and not DECISION_RE.search(reply) and tools_left > 0:
                tools_left -= 1
                try:
                    args = json.loads(tool.group(2) or "{}")
                except ValueError:
                    args = {}
                note = f"Result of {tool.group(1)}:\n{evidence.tool(tool.group(1), args if isinstance(args, dict) else {})}"
                messages.append({"role": "user", "content": note[:20000]})
                continue
            try:
                if tool and not DECISION_RE.search(reply):  # tool calls used up: this counts as a malformed answer
                    raise DecisionError(f"no tool calls left ({self.config.tool_rounds} used); decide now")
                return Decision(parse_decision(reply, state.champion_source, levers), transcript=tuple(messages))
            except NeedFullFile as e:
                err, ask = str(e), ("Your SEARCH/REPLACE edits could not be applied ({err}). Reply again in the decision "
                                    "format with the complete new harness in one ```python block.")
            except DecisionError as e:
                err, ask = str(e), "Your answer could not be used: {err}. Reply again, in the decision format only."
            if repairs_left <= 0:
                return Decision(Invalid(f"LLM Feedback-Agent answer unusable after {self.config.repairs} repair(s): {err}",
                                        raw=reply[:4000]), transcript=tuple(messages))
            repairs_left -= 1
            messages.append({"role": "user", "content": ask.format(err=err)})
