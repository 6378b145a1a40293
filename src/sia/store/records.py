"""Typed, immutable records of a run, as the store reads them back.

Every table of `sia.db` has one frozen dataclass here, built from a row by
`from_row`, with JSON columns decoded. Nothing outside `sia.store` sees a
`sqlite3.Row` or writes SQL: the store returns these records, and the `Run`
facade adds the questions the loop and the report ask of them.

Evaluations are found by purpose: `eval_key(candidate, purpose)` is the one
spelling of the key under which an evaluation is registered ("val", "test",
"train" for the analysis, "smoke", "meta", "collect:...").
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any


def purpose_key(candidate_id: str, purpose: str) -> str:
    """What an evaluation is for, unique in a run: candidate and purpose (val, test, train, smoke, meta, collect:...)."""
    return f"{candidate_id}:{purpose}"


def eval_key(candidate_id: str, purpose: str) -> str:
    """The store key under which candidate `candidate_id`'s evaluation for `purpose` is registered."""
    return "eval:" + purpose_key(candidate_id, purpose)


def scores_sha256(scores: dict[str, float]) -> str:
    """sha256 of per-example scores, independent of their order: what seals a test scoring."""
    text = json.dumps(sorted((str(k), float(v)) for k, v in scores.items()), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _json(value: Any, default: Any = None) -> Any:
    return default if value is None else json.loads(value)


class _FromRow:
    _json_fields: tuple[str, ...] = ()
    _bool_fields: tuple[str, ...] = ()

    @classmethod
    def from_row(cls, row) -> Any:
        keys = set(row.keys())
        values = {}
        for f in fields(cls):
            if f.name not in keys:
                continue
            v = row[f.name]
            if f.name in cls._json_fields:
                v = _json(v)
            elif f.name in cls._bool_fields:
                v = bool(v)
            values[f.name] = v
        return cls(**values)


@dataclass(frozen=True)
class HarnessVersion(_FromRow):
    version: str
    commit_sha: str
    source_sha: str
    parent: str | None
    rationale: str
    created: float


@dataclass(frozen=True)
class Candidate(_FromRow):
    id: str
    harness_version: str
    adapter_version: str | None
    parent: str | None
    lever: str
    rationale: str
    created: float


@dataclass(frozen=True)
class Evaluation(_FromRow):
    id: str
    candidate_id: str
    split: str
    seed: int
    samples: int
    n_examples: int
    config: dict[str, Any]
    created: float
    finished: float | None = None
    score: float | None = None
    ci_lo: float | None = None
    ci_hi: float | None = None
    _json_fields = ("config",)

    @property
    def expected(self) -> int:
        """Rollouts the evaluation holds when complete."""
        return self.n_examples * self.samples

    @property
    def purpose(self) -> str | None:
        return self.config.get("purpose")


@dataclass(frozen=True)
class _RolloutFields:
    id: str
    evaluation_id: str
    candidate_id: str
    example_id: str
    split: str
    sample: int
    seed: int
    status: str
    error_type: str | None
    error: str | None
    output: Any
    score: float
    passed: bool
    feedback: str | None
    duration_s: float | None


@dataclass(frozen=True)
class NewRollout(_RolloutFields):
    """A finished rollout, as the executor hands it to the store (written once, with its events)."""

    events: list[dict[str, Any]] = field(default_factory=list, repr=False)


@dataclass(frozen=True)
class Rollout(_RolloutFields, _FromRow):
    """A recorded rollout read back (its events are read separately, with `Store.events`)."""

    created: float = 0.0
    tokens: int = 0
    _json_fields = ("output",)
    _bool_fields = ("passed",)


@dataclass(frozen=True)
class Event:
    rollout_id: str
    seq: int
    kind: str
    t: float
    data: dict[str, Any]

    @classmethod
    def from_row(cls, row) -> Event:
        return cls(row["rollout_id"], row["seq"], row["kind"], row["t"], json.loads(row["data"]))


@dataclass(frozen=True)
class Generation(_FromRow):
    gen: int
    champion: str
    candidate_id: str | None
    proposal: dict[str, Any]
    status: str
    verdict: dict[str, Any] | None
    lesson: str | None
    val_eval: str | None
    started: float
    finished: float | None
    rollouts: int | None
    seconds: float | None
    _json_fields = ("proposal", "verdict")

    @property
    def decided(self) -> bool:
        return self.status == "decided"


@dataclass(frozen=True)
class AdapterVersion(_FromRow):
    version: str
    parent: str | None
    path: str
    """Relative to the run directory."""
    algorithm: str
    info: dict[str, Any]
    created: float
    _json_fields = ("info",)


@dataclass(frozen=True)
class AgentCall(_FromRow):
    seq: int
    role: str
    provider: str
    model: str
    url: str
    request: str
    status: int
    headers: dict[str, str]
    response: str
    input_tokens: int
    output_tokens: int
    cost: float
    replayed: bool
    created: float
    _json_fields = ("headers",)
    _bool_fields = ("replayed",)


@dataclass(frozen=True)
class ChampionChange(_FromRow):
    seq: int
    candidate_id: str
    reason: str
    generation: int | None
    created: float
