"""Every setting of a weight update, written once: the trainer, the weight lever, the agents and the docs read them here.

A `WeightUpdate` proposal carries a flat dict of settings; `plan()` turns it
into a checked `WeightPlan` (collection) holding a `TrainConfig` (optimiser,
LoRA, stopping) holding a `GRPOConfig` (the loss). Field docstrings are the
help: `settings_help()` lists every key a proposal may set, with its default
and meaning, for the LLM Feedback-Agent's prompt, so the list can never drift
from what `plan()` accepts (a test checks it key by key).

The presets are the builtin agent's CPU defaults for the two harness shapes
(see `sia.agents.builtin.weight_candidate`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sia.errors import SiaError

_CONFIG = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class GRPOConfig(BaseModel):
    model_config = _CONFIG
    scale_std: bool = True
    """Divide advantages by the group's std (GRPO); false is Dr. GRPO."""
    clip_low: float = Field(0.2, ge=0, le=1)
    """Lower clip range of the importance ratio (1 - clip_low)."""
    clip_high: float = Field(0.2, ge=0, le=10)
    """Upper clip range (1 + clip_high); above clip_low (e.g. 0.28) is DAPO's clip-higher."""
    kl_coef: float = Field(0.0, ge=0)
    """Weight of the k3 KL to the base model (adapters disabled); 0 turns it off."""
    aggregation: Literal["token", "sequence", "constant"] = "token"
    """Loss aggregation: token (DAPO), sequence (original GRPO) or constant (Dr. GRPO)."""
    max_tokens: int = Field(64, ge=1)
    """The divisor of the constant aggregation."""
    token_selection: Literal["none", "entropy", "gmts"] = "none"
    """Train only on the top tokens by entropy, or by gradient magnitude (GMTS)."""
    token_fraction: float = Field(1.0, gt=0, le=1)
    """Fraction of tokens kept by token selection."""
    is_cap: float = Field(2.0, ge=0)
    """Cap of the truncated importance weight trainer/behaviour per token, correcting for samples drawn by another engine
    (a quantized llama.cpp policy); 0 turns the correction off."""


class TrainConfig(BaseModel):
    model_config = _CONFIG
    algorithm: Literal["grpo", "sft", "ce"] = "grpo"
    """grpo (policy gradient on group-normalised rewards), sft (likelihood of the best-rewarded samples) or ce (cross-entropy
    over a labelled task's label set on the harness's own prompts: the gold label against the others)."""
    rank: int = Field(16, ge=1, le=256)
    """LoRA rank."""
    alpha: int = Field(32, ge=1)
    """LoRA alpha (the update is scaled by alpha / rank)."""
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"], min_length=1)
    """Modules that get LoRA weights."""
    lora_layers: int = Field(0, ge=0)
    """LoRA on the last N decoder layers only (0: every layer). The backward pass then stops at the first of them. A
    trade, measured by bench/ce_variants.py on LawBench's topics: the last 10 of SmolLM2's 30 layers made a ce step 1.7x
    faster and the adapter's validation accuracy 0.200 against 0.288 with all."""
    lr: float = Field(3e-4, gt=0, lt=1)
    """LoRA learning rate; about 3e-4 works on CPU with SmolLM2 (TRL's 1e-6 default learns nothing)."""
    steps: int = Field(25, ge=1, le=1000)
    """Optimiser steps per round."""
    prompts_per_step: int = Field(4, ge=1)
    """Groups per step: several, so one step sees different labels (one group per step collapses)."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Gradient clipping norm."""
    heldout: float = Field(0.0, ge=0, lt=0.5)
    """Share of the collected groups held out (ce, sft on gold answers): their loss is read every quarter pass, training stops
    once it has not improved twice, and the adapter keeps the weights of its best reading. 0 trains `steps` steps."""
    epochs: float = Field(0.0, ge=0)
    """ce: passes over the collected groups (steps = epochs x groups / prompts_per_step, at most `steps`); 0 uses `steps`."""
    negatives: int = Field(0, ge=0)
    """ce: wrong candidates per group that a step trains the gold one against (0: all of them): the ones the harness
    scored highest when collecting (random ones where no scores were recorded). A task with few labels is not changed.
    A trade, measured by bench/ce_variants.py on LawBench's 20 topics: 7 made a step 1.65x faster and the adapter's
    validation accuracy 0.176 against 0.288 with all 19 (the topics left out rise unchecked)."""
    calibration_inputs: int = Field(4, ge=0)
    """ce on a calibrating harness: content-free inputs a step scores (with gradient), drawn at random per step from the
    harness's (0: all). The harness subtracts their mean score, and a random few estimate that mean without bias. A
    trade, measured by bench/ce_variants.py on sentiment's domain-calibrated champion (8 inputs): 4 made 8 steps 14%
    faster (191 s against 222 s) for a validation accuracy of 0.890 against 0.895 with all 8."""
    collapse_share: float = Field(0.95, gt=0, le=1)
    """Stop when the model prefers one answer in at least this share of recent groups it does not deserve."""
    collapse_patience: int = Field(3, ge=1)
    """Steps the collapse must last before training stops."""
    seed: int = 0
    """Seed of the LoRA initialisation and of the group order."""
    grpo: GRPOConfig = Field(default_factory=GRPOConfig)

    def steps_for(self, groups: int) -> int:
        """Steps of a round on `groups` usable groups: `steps`, or for ce with `epochs` the passes it asks for (at most `steps`)."""
        if self.algorithm != "ce" or self.epochs <= 0:
            return self.steps
        return max(1, min(self.steps, round(self.epochs * groups / min(self.prompts_per_step, max(groups, 1)))))


class WeightPlan(BaseModel):
    model_config = _CONFIG
    rounds: int = Field(1, ge=1, le=100)
    """Collect-then-train rounds; each round collects with the adapter as trained so far."""
    examples: int = Field(32, ge=1)
    """Train examples to collect rollouts on, per round."""
    samples: int = Field(8, ge=1, le=64)
    """Rollouts per example (the GRPO group size); 1 for a harness that scores labels."""
    temperature: float = Field(1.0, gt=0, le=2)
    """Sampling temperature of the collection rollouts' generations."""
    train: TrainConfig = Field(default_factory=TrainConfig)

    def most_steps(self) -> int:
        """The most steps a round takes: `TrainConfig.steps_for` the examples not held out."""
        held = round(self.examples * self.train.heldout) if self.train.heldout > 0 else 0
        return self.train.steps_for(max(1, self.examples - held))


DATA_SOURCES = ("train", "distill", "gold")
"""train: the champion's rollouts credited by the grader; distill: a cheaper student harness's prompts, with the champion's
own answers on the same train examples as the targets (ce only); gold: the champion harness's prompts on train examples,
with the task's gold answers as the completions (sft only): a supervised fine-tune on the harness's own prompts."""
SAMPLING_PRESET: dict[str, Any] = {"rounds": 5, "examples": 8, "samples": 8, "steps": 2, "prompts_per_step": 4, "lr": 1e-3,
                                   "temperature": 1.0, "token_selection": "entropy", "token_fraction": 0.2}
"""CPU defaults for a sampling harness: on-policy rounds, entropy token selection."""
SCORING_PRESET: dict[str, Any] = {"examples": 64, "samples": 1, "steps": 25, "prompts_per_step": 8, "lr": 3e-4}
"""CPU defaults for GRPO on a harness that scores labels: one rollout per example gives an exact group."""
LABEL_PRESET: dict[str, Any] = {"examples": 128, "samples": 1, "steps": 400, "epochs": 4.0, "prompts_per_step": 16, "lr": 5e-4,
                                "temperature": 0.1, "heldout": 0.1}
"""Defaults for ce on a labelled task: one rollout per example through the harness (its prompt), a tenth held out to stop
on, at most four passes over the rest. The builtin agent sets the examples to the whole train split and shrinks the
passes, then the examples, to the budget (`sia.agents.builtin.fit_to_budget`); the held-out loss decides how many of the
steps are taken, so the update's length is the task's own loss curve."""
GOLD_PRESET: dict[str, Any] = {"samples": 1, "prompts_per_step": 8, "lr": 3e-4, "temperature": 0.1, "heldout": 0.1}
"""Defaults for sft on gold answers: one rollout per example (its prompt), a tenth of the examples held out to stop on; the
examples (all of train) and the steps (at most two passes) are sized by the agent to the budget left."""

_LEVELS: list[tuple[type[BaseModel], set[str]]] = [
    (WeightPlan, {"train"}), (TrainConfig, {"algorithm", "grpo"}), (GRPOConfig, set())]


def setting_fields() -> dict[str, Any]:
    """Every key a proposal's config may set, with its pydantic field (plan, trainer and loss settings)."""
    out: dict[str, Any] = {}
    for cls, skip in _LEVELS:
        out.update({k: f for k, f in cls.model_fields.items() if k not in skip})
    return out


def settings_help() -> str:
    """One line per setting (name, default, help), generated from the fields; shown to the LLM Feedback-Agent."""
    lines = []
    for name, f in setting_fields().items():
        default = f.get_default(call_default_factory=True)
        lines.append(f"- {name} (default {default!r}): {f.description or ''}")
    return "\n".join(lines)


def plan(algorithm: str, settings: dict[str, Any] | None = None, data: str = "train") -> WeightPlan:
    """A checked plan from a proposal's algorithm, flat settings and data source; SiaError naming what is wrong."""
    if algorithm not in ("grpo", "sft", "ce"):
        raise SiaError(f"unknown training algorithm {algorithm!r}", "use grpo, sft or ce")
    if data not in DATA_SOURCES:
        raise SiaError(f"unknown training data {data!r}", f"use one of {', '.join(DATA_SOURCES)}")
    if data == "distill" and algorithm != "ce":
        raise SiaError("distillation trains by ce", "use algorithm ce with data distill")
    if data == "gold" and algorithm != "sft":
        raise SiaError("gold answers train by sft", "use algorithm sft with data gold")
    settings = dict(settings or {})
    known = setting_fields()
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise SiaError(f"unknown weight-update setting(s) {', '.join(unknown)}", f"use {', '.join(sorted(known))}")
    pick = lambda cls, skip: {k: v for k, v in settings.items() if k in cls.model_fields and k not in skip}  # noqa: E731
    try:
        grpo = GRPOConfig(**pick(GRPOConfig, set()))
        train = TrainConfig(algorithm=algorithm, grpo=grpo, **pick(TrainConfig, {"algorithm", "grpo"}))
        return WeightPlan(train=train, **pick(WeightPlan, {"train"}))
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(x) for x in first["loc"])
        raise SiaError(f"weight-update setting {key}: {first['msg']} (got {first.get('input')!r})",
                       "fix the proposal's config") from None
