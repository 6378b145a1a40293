"""The Feedback-Agent contract: `decide(state) -> Decision`.

`AgentState` is everything a Feedback-Agent is given about one generation:
the task (its public part and train examples), the champion's harness source
and adapter, the analysis of its train rollouts, the design memory, what was
already tried, the levers allowed, and the measured costs and budget left.
Validation scores appear only as the champion's mean; test never appears.

A `Decision` carries the proposal, the ranking the agent weighed (for the log
and the report) and the transcript of its model conversation, if any. The
builtin agent and the LLM agent implement the same protocol; so can a user's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from sia.agents.proposal import Proposal
from sia.evaluation.analysis import Analysis
from sia.store.memory import Memory
from sia.task.loading import Example, Task


@dataclass(frozen=True)
class AgentState:
    task: Task
    champion_source: str
    analysis: Analysis
    memory: Memory
    train: list[Example]
    tried: set[str] = field(default_factory=set)
    """source_sha of every harness tried on the champion's adapter."""
    generation: int = 0
    levers: tuple[str, ...] = ("harness",)
    seed: int = 0
    champion_adapter: str | None = None
    rollout_s: float = 0.3
    """Measured seconds per validation rollout of the champion (for cost estimates)."""
    val_n: int = 200
    seconds_left: float | None = None
    """Budget left for this generation; a change that costs more is not proposed."""
    champion_val: float | None = None
    """The champion's validation score (what the gate compares against)."""
    analysis_eval: str | None = None
    """The evaluation id of the champion's train rollouts that `analysis` summarises."""
    train_slowdown: float = 1.0
    """How many times longer a training step takes on this machine than the cost model's constants say
    (`sia.agents.costs.machine_slowdown`)."""
    priors: tuple[Any, ...] = ()
    """Records of changes gated in earlier runs (`sia.store.priors.Record`), empty with `--no-memory`."""
    features: Any = None
    """This task's features as the run measured them first (`sia.store.priors.Features`), for similarity to the records."""
    budget_s: float | None = None
    """The run's whole budget in seconds (with `seconds_left`, the share still unused)."""


@dataclass(frozen=True)
class Decision:
    proposal: Proposal
    ranking: tuple[tuple[Any, ...], ...] = ()
    """(kind, relevance, relevance per minute, rationale) of the options weighed, best first."""
    transcript: tuple[dict[str, str], ...] = ()
    """The model conversation that led to the proposal (LLM agents)."""


class FeedbackAgent(Protocol):
    name: str
    """Shown in the live view and the logs: "builtin", or the model's spelling."""

    def decide(self, state: AgentState) -> Decision: ...
