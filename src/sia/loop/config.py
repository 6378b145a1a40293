"""`RunConfig`: every setting of `sia run`, written once, with its help and its checks.

The tree is `RunConfig` (budgets, levers, sizes) holding `GateConfig`
(`sia.loop.gate`) and `AgentsConfig` (`sia.agents.config`). Field docstrings
are the help text; constraints and validators are the only checks, and say how
to fix a bad value. The CLI options of `sia run` and the keyword arguments of
`sia.run()` are the leaves of this tree (`leaf_fields`), so neither can drift
from it. A field marked `{"cli": False}` is not offered on the command line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from sia.agents.config import AgentsConfig
from sia.errors import SiaError
from sia.evaluation.options import ExecutionOptions
from sia.loop.gate import GateConfig


def parse_duration(text: str | float | int) -> float:
    """'10m', '90s', '1h30m' or a number of seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    t = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        return float(t)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", t)
    if not parts or "".join(f"{a}{b}" for a, b in parts) != t.replace(" ", ""):
        raise ValueError(f"cannot read the duration {text!r}: use e.g. 10m, 90s, 1h30m or a number of seconds")
    return sum(float(a) * {"h": 3600, "m": 60, "s": 1}[b] for a, b in parts)


class RunConfig(ExecutionOptions):
    """Every setting of `sia run` and `sia.run()`: how rollouts run (`ExecutionOptions`, shared with `sia eval`), and a run's
    budgets, levers, gate and agents."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)
    task: str = Field("sentiment", json_schema_extra={"cli": "argument"})
    """Builtin task name or task folder."""
    budget: float = Field(600.0, gt=0, json_schema_extra={"cli_type": str, "cli_default": "10m"})
    """Wall-clock budget of the whole run, resumes included: 10m, 90s, 1h30m or seconds."""
    levers: tuple[str, ...] = Field((), json_schema_extra={"cli_type": str, "cli_default": None})
    """Comma-separated levers the Feedback-Agent may pull: harness, weights (LoRA training), or both. Default: both
    (harness only with --task-model)."""
    max_generations: int = Field(20, ge=1)
    """At most this many generations."""
    max_rollouts: int | None = Field(None, ge=1)
    """Stop after this many rollouts."""
    max_tokens: int | None = Field(None, ge=1)
    """Stop after this many model tokens."""
    memory: bool = True
    """Rank options with the records of changes gated in earlier runs on similar tasks (SIA_HOME/memory), and add this
    run's; --no-memory does neither."""
    track: Literal["mlflow", "tensorboard"] | None = None
    """Log the run live to an experiment tracker: mlflow or tensorboard (sia's track extra installs both); `sia export`
    does it after the fact."""
    track_uri: str | None = None
    """Where --track logs: an MLflow tracking URI (default sqlite:///RUN_DIR/mlflow.db) or a TensorBoard log folder
    (default RUN_DIR/tensorboard)."""
    patience: int = Field(5, ge=1)
    """Stop after this many generations in a row without an accepted change, once 10% of the budget or less is left."""
    analysis_examples: int = Field(48, ge=1)
    """Train examples the champion is run on for the Feedback-Agent each time it changes."""
    smoke_examples: int = Field(2, ge=1)
    """Train examples a new challenger must survive before it is evaluated on validation."""
    val_limit: int | None = Field(None, ge=1)
    """Gate on the first N validation examples only."""
    test_limit: int | None = Field(None, ge=1)
    """Report on the first N test examples only."""
    auto_limits: bool = True
    """When the measured throughput says the baseline would take over half the budget, evaluate on the first val and test
    examples only, and say so; --no-auto-limits stops with the limits to pass instead."""
    attribution: bool = True
    """When the final champion changed both the harness and the adapter, also score the harness alone and the adapter alone
    on test, and report each lever's effect and their interaction (two more test evaluations, kept in the budget)."""
    gate: GateConfig = Field(default_factory=GateConfig)
    agents: AgentsConfig = Field(default_factory=AgentsConfig)

    @field_validator("budget", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float:
        return parse_duration(v)

    @field_validator("levers", mode="before")
    @classmethod
    def _levers(cls, v: Any) -> tuple[str, ...]:
        if v is None:
            return ()
        items = v.split(",") if isinstance(v, str) else list(v)
        levers = tuple(dict.fromkeys(str(x).strip() for x in items if str(x).strip()))
        if isinstance(v, str) and not levers:
            raise ValueError("no lever named: use harness, weights or harness,weights")
        return levers

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        """Levers default to both (harness alone with a remote task model); the gate's seed is the run's."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("levers") in (None, (), []):
            agents = data.get("agents") or {}
            task_model = agents.task_model if isinstance(agents, AgentsConfig) else agents.get("task_model")
            data["levers"] = ("harness",) if task_model else ("harness", "weights")
        gate, seed = data.get("gate") or {}, data.get("seed", 0)
        data["gate"] = gate.model_copy(update={"seed": seed}) if isinstance(gate, GateConfig) else {**gate, "seed": seed}
        return data

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        from sia.loop.levers import lever_names

        unknown = [x for x in self.levers if x not in lever_names()]
        if unknown:
            raise ValueError(f"unknown lever(s) {', '.join(unknown)}: choose from {', '.join(lever_names())}, comma-separated")
        if self.agents.task_model and "weights" in self.levers:
            raise SiaError(
                f"the weights lever trains a LoRA adapter on the local model, and --task-model {self.agents.task_model} is remote",
                "use --levers harness with a remote task model, or drop --task-model",
            )
        return self


def leaf_fields(cls: type[BaseModel] = RunConfig, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], FieldInfo]]:
    """(path, field) of every setting in the tree, nested configs flattened; their names are unique."""
    for name, f in cls.model_fields.items():
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from leaf_fields(ann, (*path, name))
        else:
            yield (*path, name), f


def option_name(path: tuple[str, ...], f: FieldInfo) -> str:
    extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
    return str(extra.get("cli_name", path[-1]))


def from_flat(**settings: Any) -> RunConfig:
    """A checked RunConfig from flat settings (`tau=`, `feedback_model=`, ...) as the CLI and `sia.run()` take them."""
    nested: dict[str, Any] = {}
    offered = [
        (path, f) for path, f in leaf_fields() if not (isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("cli") is False)
    ]
    by_name = {path[-1]: path for path, _ in offered}
    by_name.update({option_name(path, f): path for path, f in offered})
    unknown = sorted(set(settings) - set(by_name))
    if unknown:
        raise SiaError(f"unknown run setting(s) {', '.join(unknown)}", f"use {', '.join(sorted(by_name))}")
    for key, value in settings.items():
        path = by_name[key]
        node = nested
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return checked(RunConfig, nested)


def checked(cls: type[BaseModel], data: dict[str, Any], command: str = "run") -> Any:
    """`cls.model_validate(data)`, with a validation error turned into one line naming the option to fix."""
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = [str(x) for x in first["loc"] if not str(x).isdigit()]
        option = "--" + loc[-1].replace("_", "-") if loc else "the settings"
        msg = first["msg"].removeprefix("Value error, ")
        got = f" (got {first['input']!r})" if loc and "input" in first and not isinstance(first["input"], dict) else ""
        raise SiaError(f"{option}: {msg}{got}", f"fix the option; see `sia {command} --help`") from None
