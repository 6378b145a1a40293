"""The trainer: a LoRA adapter trained on the agent's own recorded model calls.

Training data comes from the run store, never from a re-implementation of the
harness: every llm_call the policy service recorded for a rollout (prompt token
ids, completion token ids, the behaviour policy's logprobs) becomes a sample
credited with that rollout's reward, grouped by example.

- GRPO: each step takes `prompts_per_step` groups that have reward spread,
  computes group-normalised advantages, and minimises the clipped surrogate of
  `sia.grpo` against the recorded logprobs (optionally with a KL to the base,
  computed by disabling the adapter, so no second model copy is loaded).
- SFT: negative log-likelihood of the completions of the best-rewarded samples,
  so behaviour the harness enforces moves into the weights.

Each step logs reward mean and spread, loss, KL and the distribution of the
rollouts' outputs (labels); training stops early when the outputs of a step
collapse onto one answer for `collapse_patience` steps in a row.

Simplification on purpose: the samples are collected once, before training;
later steps reuse them (the importance ratio and clipping account for the
drift). Re-collecting between steps through the harness is the loop's job.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from sia.grpo import GRPOConfig, completion_logprobs, gmts_scores, group_advantages, has_spread, policy_loss, token_entropy


@dataclass(frozen=True)
class Sample:
    """One recorded model call, credited with its rollout's reward."""
    group: str
    prompt_ids: list[int]
    completion_ids: list[int]
    old_logprobs: list[float]
    reward: float
    output: str


@dataclass
class TrainConfig:
    algorithm: Literal["grpo", "sft"] = "grpo"
    rank: int = 16
    alpha: int = 32
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    lr: float = 3e-4
    """LoRA learning rate; about 3e-4 works on CPU with SmolLM2 (TRL's 1e-6 default learns nothing)."""
    steps: int = 25
    prompts_per_step: int = 4
    """Groups per step: several, so one step sees different labels (one group per step collapses)."""
    max_grad_norm: float = 1.0
    collapse_share: float = 0.95
    collapse_patience: int = 3
    seed: int = 0
    grpo: GRPOConfig = field(default_factory=GRPOConfig)


@dataclass
class TrainResult:
    adapter_dir: Path
    log: list[dict[str, Any]]
    stopped_early: str | None


def samples_from_store(store, evaluation_id: str) -> list[Sample]:
    """Every recorded completion of an evaluation's rollouts, with the rollout's score as reward."""
    out = []
    for r in store.rollouts(evaluation_id):
        output = json.loads(r["output"]) if r["output"] else ""
        for ev in store.events(r["id"]):
            if ev["kind"] != "llm_call" or ev["data"].get("kind") not in ("chat", "completion"):
                continue
            d = ev["data"]
            prompts = [d.get("prompt_token_ids")] if d.get("kind") == "chat" else [p.get("prompt_token_ids") for p in d.get("prompts", [])]
            comps = d.get("completions", [])
            per_prompt = max(1, len(comps) // max(1, len(prompts)))
            for i, c in enumerate(comps):
                prompt = prompts[min(i // per_prompt, len(prompts) - 1)]
                if prompt and c.get("token_ids") and c.get("logprobs") and len(c["token_ids"]) == len(c["logprobs"]):
                    out.append(Sample(r["example_id"], list(prompt), list(c["token_ids"]), list(c["logprobs"]), float(r["score"]),
                                      output if isinstance(output, str) else json.dumps(output)))
    return out


def _batch(samples: list[Sample], pad_id: int, torch):
    L = max(len(s.prompt_ids) + len(s.completion_ids) for s in samples)
    ids = torch.full((len(samples), L), pad_id, dtype=torch.long)
    attn = torch.zeros((len(samples), L), dtype=torch.long)
    comp = torch.zeros((len(samples), L), dtype=torch.float)
    old = torch.zeros((len(samples), L), dtype=torch.float)
    for i, s in enumerate(samples):
        seq = s.prompt_ids + s.completion_ids
        p = len(s.prompt_ids)
        ids[i, : len(seq)] = torch.tensor(seq)
        attn[i, : len(seq)] = 1
        comp[i, p : len(seq)] = 1
        old[i, p : len(seq)] = torch.tensor(s.old_logprobs)
    return ids, attn, comp, old


def train(model_dir: str | Path, samples: list[Sample], config: TrainConfig, out_dir: str | Path, *, pad_id: int = 0,
          lineage: dict[str, Any] | None = None, on_step: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train a LoRA adapter on `samples` and save it, in PEFT's layout, to `out_dir`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=config.rank, lora_alpha=config.alpha, target_modules=config.target_modules,
                                            lora_dropout=0.0, task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault(s.group, []).append(s)
    if config.algorithm == "grpo":
        usable = [g for g, ss in groups.items() if len(ss) > 1 and has_spread(torch.tensor([s.reward for s in ss]))]
    else:
        best = max((s.reward for s in samples), default=0.0)
        usable = [g for g, ss in groups.items() if any(s.reward >= best and s.reward > 0 for s in ss)]
    log: list[dict[str, Any]] = []
    stopped = None if usable else "no usable groups (no reward spread)" if config.algorithm == "grpo" else "no successful samples"
    collapsed = 0
    for step in range(config.steps if usable else 0):
        t0 = time.monotonic()
        chosen = rng.sample(usable, min(config.prompts_per_step, len(usable)))
        batch_samples, adv = [], []
        for g in chosen:
            ss = groups[g]
            if config.algorithm == "grpo":
                a = group_advantages(torch.tensor([s.reward for s in ss]), scale_std=config.grpo.scale_std)
                batch_samples += ss
                adv += a.tolist()
            else:
                top = max(s.reward for s in ss)
                batch_samples += [s for s in ss if s.reward >= top]
        ids, attn, comp, old = _batch(batch_samples, pad_id, torch)
        new, logits = completion_logprobs(model, ids, attn, comp)
        if config.algorithm == "grpo":
            advantages = torch.tensor(adv)
            ref = None
            if config.grpo.kl_coef > 0:
                with torch.no_grad(), model.disable_adapter():
                    ref, _ = completion_logprobs(model, ids, attn, comp)
            scores = None
            if config.grpo.token_selection == "entropy":
                scores = token_entropy(logits.detach())
            elif config.grpo.token_selection == "gmts":
                scores = gmts_scores(new, advantages)
            loss, stats = policy_loss(new, old, advantages, comp, config.grpo, ref, scores)
        else:
            loss = -(new * comp).sum() / comp.sum().clamp(min=1)
            stats = {"loss": float(loss.detach()), "kl": 0.0, "tokens": int(comp.sum())}
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.max_grad_norm)
        opt.step()
        rewards = [s.reward for s in batch_samples]
        outputs = Counter(s.output for s in batch_samples)
        mean = sum(rewards) / len(rewards)
        entry = {"step": step + 1, "reward_mean": mean, "reward_std": (sum((r - mean) ** 2 for r in rewards) / len(rewards)) ** 0.5,
                 **stats, "outputs": dict(outputs.most_common(5)), "seconds": round(time.monotonic() - t0, 3)}
        log.append(entry)
        if on_step:
            on_step(entry)
        top_share = outputs.most_common(1)[0][1] / len(batch_samples)
        collapsed = collapsed + 1 if top_share >= config.collapse_share else 0
        if collapsed >= config.collapse_patience:
            stopped = f"outputs collapsed onto {outputs.most_common(1)[0][0]!r} for {collapsed} steps"
            break
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    cfg = asdict(config)
    (tmp / "sia_training.json").write_text(json.dumps({"config": cfg, "lineage": lineage or {}, "log": log, "stopped_early": stopped,
                                                       "samples": len(samples), "groups_used": len(usable)}, indent=1, default=str))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)  # an adapter version appears whole or not at all
    return TrainResult(out_dir, log, stopped)
