"""The options `sia eval`, `sia run` and the Python API share, written once: `ExecutionOptions` and `EvalOptions`.

`RunConfig` (`sia.loop.config`) extends `ExecutionOptions` with a run's budgets
and levers; `EvalOptions` extends it with what one evaluation needs. The CLI
options of both commands and the keyword arguments of `sia.evaluate()` and
`sia.run()` are these fields, so a default (the concurrency, say) cannot differ
between them. Field docstrings are the help text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ExecutionOptions(BaseModel):
    """How rollouts run: the same for an evaluation and for every evaluation of a run."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)
    seed: int = 0
    """Seed for sampling (and, in a run, for demonstrations, the gate and the LoRA initialisation)."""
    concurrency: int = Field(16, ge=1)
    """Rollouts at once."""
    timeout: float | None = Field(None, gt=0)
    """Wall-clock seconds per rollout, queueing at the policy service included (default: the task's timeout_s)."""
    policy_backend: Literal["auto", "hf", "llamacpp"] = "auto"
    """Engine of the local policy: auto (the faster one measured by `sia setup`), hf (PyTorch, fp32) or llamacpp (the GGUF)."""
    sandbox: Literal["auto", "bwrap", "process"] = "auto"
    """Rollout isolation: auto (bubblewrap where it runs), bwrap, or process (no namespaces; sia's template harnesses only)."""
    unsafe_sandbox: bool = False
    """Run harnesses sia did not write even where only the process sandbox is available (they could read hidden labels)."""


class EvalOptions(ExecutionOptions):
    """Every setting of `sia eval` and `sia.evaluate()`."""

    task: str = Field("sentiment", json_schema_extra={"cli": "argument"})
    """Builtin or zoo task name, or task folder."""
    harness: Path | None = None
    """Harness file; default: the task's harness or the template."""
    split: Literal["train", "val", "test"] = "val"
    """train, val or test."""
    limit: int | None = Field(None, ge=1)
    """Only the first N examples of the split."""
    samples: int = Field(1, ge=1)
    """Rollouts per example."""
    endpoint: str | None = None
    """External OpenAI-compatible base URL, e.g. http://localhost:8000/v1."""
    model: str | None = None
    """Model name at --endpoint, or a local HF model folder."""
    adapter: Path | None = None
    """A PEFT LoRA adapter folder to run the local policy with."""
