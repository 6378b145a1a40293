"""What a Feedback-Agent may propose: a harness edit, a weight update, or to stop (or an answer it could not make valid).

Proposals are immutable records; the loop stores them as JSON before acting on
them, so a resumed run acts on exactly the proposal it had made. Every proposal
names its `lever` (the loop hands it to the lever of that name), its `kind`
(what design memory groups outcomes by) and a `rationale`. A lever registered
beyond the builtin two brings its own proposal type, any frozen dataclass with
those three fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class HarnessEdit:
    source: str
    rationale: str
    kind: str = "rewrite"
    lever: str = "harness"
    expected_gain: float | None = None
    """The proposing agent's estimate of the validation gain, shown in the report beside the realised one."""


@dataclass(frozen=True)
class WeightUpdate:
    algorithm: str  # "grpo" | "sft" | "ce"
    config: dict[str, Any] = field(default_factory=dict)
    data: str = "train"
    rationale: str = ""
    kind: str = "weights"
    lever: str = "weights"
    harness: str | None = None
    """data "distill": the cheaper student harness whose prompts the adapter learns to answer as the champion does."""
    expected_gain: float | None = None
    """The proposing agent's estimate of the validation gain, shown in the report beside the realised one."""


@dataclass(frozen=True)
class Stop:
    reason: str
    kind: str = "stop"
    lever: str = "stop"

    @property
    def rationale(self) -> str:
        return self.reason


@dataclass(frozen=True)
class Invalid:
    """A Feedback-Agent answer that could not be turned into a change after repairs: rejected with its reason."""

    reason: str
    raw: str = ""
    kind: str = "malformed"
    lever: str = "invalid"

    @property
    def rationale(self) -> str:
        return self.reason


Proposal = HarnessEdit | WeightUpdate | Stop | Invalid
_TYPES = {"harness": HarnessEdit, "weights": WeightUpdate, "stop": Stop, "invalid": Invalid}


def to_dict(p: Proposal) -> dict[str, Any]:
    return asdict(p)


def from_dict(d: dict[str, Any], types: Mapping[str, type] | None = None) -> Any:
    """The proposal a record holds; `types` adds the proposal types of levers registered beyond harness and weights."""
    cls = {**_TYPES, **(types or {})}[d["lever"]]
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})  # records may carry extra keys (analysis, ranking)
