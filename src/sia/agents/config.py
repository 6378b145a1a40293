"""Settings of the Meta- and Feedback-Agents, and the one spelling that names an agent model.

`AgentsConfig` is the agents' part of a run's configuration: which
Feedback-Agent decides, which models the LLM agents use, their budgets and
limits, and a recording to replay. Its checks need no network and no key:
they run before anything is loaded (keys are checked by `sia.api`).

A model is named `anthropic:MODEL`, `openai:MODEL` or `openai:MODEL@URL`
everywhere (`--feedback-model`, `--meta-model`, `--task-model`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sia.errors import SiaError

# USD per million tokens (input, output); override or extend with --price MODEL=IN,OUT.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "claude-opus-4-1": (15.0, 75.0),
    "claude-sonnet-4-6": (3.0, 15.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
    "gpt-5": (1.25, 10.0),
    "gpt-5-mini": (0.25, 2.0),
    "gpt-4.1": (2.0, 8.0),
    "gpt-4.1-mini": (0.4, 1.6),
    "gpt-4o": (2.5, 10.0),
    "gpt-4o-mini": (0.15, 0.6),
}
KEY_VARS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
ANTHROPIC_OPENAI_URL = "https://api.anthropic.com/v1/"


class AgentModelError(SiaError):
    boundary = "agent model"


@dataclass(frozen=True)
class ModelSpec:
    provider: str  # "openai" | "anthropic"
    model: str
    base_url: str | None = None

    @property
    def spelling(self) -> str:
        return f"{self.provider}:{self.model}" + (f"@{self.base_url}" if self.base_url else "")

    @property
    def local(self) -> bool:
        """A server on this machine: no key needed, no price."""
        host = urlsplit(self.base_url).hostname if self.base_url else None
        return host in ("127.0.0.1", "localhost", "::1", "0.0.0.0")


def parse_model_spec(text: str) -> ModelSpec:
    """`anthropic:MODEL`, `openai:MODEL` or `openai:MODEL@BASE_URL`."""
    provider, sep, rest = text.partition(":")
    model, _, url = rest.partition("@")
    if not sep or provider not in KEY_VARS or not model:
        raise AgentModelError(f"cannot read model {text!r}",
                              "write anthropic:claude-sonnet-4-6, openai:gpt-4.1 or openai:MODEL@http://host:port/v1")
    if url and not url.startswith(("http://", "https://")):
        raise AgentModelError(f"model {text!r}: {url!r} is not an http(s) URL", "e.g. openai:qwen@http://localhost:8000/v1")
    return ModelSpec(provider, model, url or None)


def api_key(spec: ModelSpec, env: dict[str, str] | None = None) -> str:
    """The key for `spec` from the environment, or one clear error naming the variable to set."""
    env = os.environ if env is None else env
    var = KEY_VARS[spec.provider]
    key = env.get(var) or (env.get("SIA_API_KEY") if spec.provider == "openai" else None)
    if key:
        return key
    if spec.base_url and spec.provider == "openai":
        return "not-needed"  # self-hosted servers (vLLM, llama.cpp, Ollama) usually take any key
    raise AgentModelError(f"{spec.spelling} needs an API key and {var} is not set",
                          f"export {var}=... (or use a local server: openai:MODEL@http://localhost:8000/v1)")


def parse_prices(items: list[str] | None) -> dict[str, tuple[float, float]]:
    """`MODEL=IN,OUT` (USD per million input and output tokens) added to the default table."""
    prices = dict(DEFAULT_PRICES)
    for item in items or []:
        name, _, vals = item.partition("=")
        try:
            pin, pout = (float(x) for x in vals.split(","))
        except ValueError:
            raise AgentModelError(f"cannot read price {item!r}", "write MODEL=IN,OUT in USD per million tokens, e.g. gpt-4.1=2,8") from None
        prices[name.strip()] = (pin, pout)
    return prices


def price_of(spec: ModelSpec, prices: dict[str, tuple[float, float]]) -> tuple[float, float] | None:
    if spec.model in prices:
        return prices[spec.model]
    if spec.local:
        return (0.0, 0.0)
    # dated or suffixed names (claude-sonnet-4-6-20261001) take the price of their family
    best = max((k for k in prices if spec.model.startswith(k)), key=len, default=None)
    return prices[best] if best else None


class AgentsConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)
    feedback: Literal["builtin", "llm"] = "builtin"
    """Feedback-Agent: builtin (no extra model) or llm (needs --feedback-model)."""
    feedback_model: str | None = None
    """The LLM Feedback-Agent's model: anthropic:MODEL, openai:MODEL or openai:MODEL@http://host:port/v1."""
    meta_model: str | None = None
    """Model that writes the first harness (default with --feedback llm: the feedback model; 'template': sia's template)."""
    task_model: str | None = None
    """Run the task agent on a remote model (same spelling) instead of the local one; the weights lever is then unavailable."""
    agent_budget_usd: float | None = Field(None, ge=0)
    """Money the Meta- and Feedback-Agents may spend in this run (USD)."""
    agent_budget_tokens: int | None = Field(None, ge=1)
    """Tokens the Meta- and Feedback-Agents may spend in this run."""
    agent_max_tokens: int = Field(4096, ge=16)
    """Longest reply asked of an agent model."""
    agent_context_tokens: int = Field(16000, ge=500)
    """Token budget of the evidence shown to the LLM Feedback-Agent."""
    agent_repairs: int = Field(2, ge=0)
    """Times a malformed Feedback-Agent answer is shown its error and asked again."""
    meta_attempts: int = Field(3, ge=1)
    """Harnesses the LLM Meta-Agent may write before sia falls back to its template."""
    prices: list[str] = Field(default_factory=list, json_schema_extra={"cli_name": "price"})
    """MODEL=IN,OUT: USD per million input/output tokens (repeatable)."""
    replay: str | None = None
    """Answer the agents' model calls from this run directory (or JSONL recording) instead of the network."""

    @model_validator(mode="after")
    def _check(self) -> AgentsConfig:
        if self.feedback == "llm" and not self.feedback_model:
            raise SiaError("--feedback llm needs --feedback-model", "e.g. --feedback-model anthropic:claude-sonnet-4-6")
        if self.feedback == "builtin" and self.feedback_model:
            raise SiaError("--feedback-model is set but the Feedback-Agent is builtin", "add --feedback llm")
        parse_prices(self.prices)
        for spelling in (self.feedback_model, self.meta_spec_spelling, self.task_model):
            if spelling:
                parse_model_spec(spelling)
        if self.replay and not Path(self.replay).exists():
            raise SiaError(f"--replay {self.replay}: no such run directory or recording", "pass an earlier run directory or a JSONL file")
        return self

    @property
    def meta_spec_spelling(self) -> str | None:
        """The model that writes the first harness, or None for sia's template."""
        if self.meta_model == "template":
            return None
        if self.meta_model:
            return self.meta_model
        return self.feedback_model if self.feedback == "llm" else None
