"""The trainer: a LoRA adapter trained on the agent's own recorded model calls.

Training data comes from the run store, never from a re-implementation of the
harness: `sia.weights.samples` turns every llm_call the policy service recorded for a
rollout into samples credited with that rollout's reward, grouped by example.
Training continues from the champion's adapter when it has one (`init_adapter`),
so each adapter version builds on its parent.

- GRPO: each step takes `prompts_per_step` groups that have reward spread,
  computes group-normalised advantages, and minimises the clipped surrogate of
  `sia.weights.grpo` against the recorded logprobs (optionally with a KL to the base,
  computed by disabling the adapter, so no second model copy is loaded).
- SFT: negative log-likelihood of the completions of the best-rewarded samples,
  so behaviour the harness enforces moves into the weights.
- CE (a labelled task): each group is the label set on one of the harness's
  prompts; the loss is the cross-entropy of the best-rewarded label under a
  softmax over the labels' sequence log-likelihoods (exactly the choice a
  scoring harness makes), plus, for a generating harness, the gold label's own
  negative log-likelihood. No sampling, no clipping: the groups are taken in
  shuffled passes (`epochs`), `prompts_per_step` prompts a step.

Each step logs reward mean and spread, loss, KL, the distribution of the
collected outputs (labels) and of the answers the model now prefers: in each
group, the answer of the sample it gives the highest likelihood (for a scoring
group, exactly its choice among the labels). Training stops early when the
preferred answers of the last `collapse_patience` steps collapse onto one
answer that deserves far less than that share (unless the model started out
preferring that answer: a bias training is there to remove is no collapse it
caused).

`Trainer` keeps the model and optimiser across rounds: the loop collects fresh
samples through the harness with the adapter as trained so far, then calls
`round` for a few steps, so training stays close to on-policy. Steps within a
round reuse its samples (the importance ratio and clipping account for the
drift). `train` is one round on samples collected beforehand.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sia.task.graders import first_line, normalise_label
from sia.weights.config import TrainConfig
from sia.weights.grpo import (
    gmts_scores,
    group_advantages,
    has_spread,
    importance_weights,
    policy_loss,
    shared_prompt_logprobs,
    token_entropy,
)
from sia.weights.samples import Sample, calibration_subset, hardest, samples_from_store  # noqa: F401 (samples_from_store: the trainer's input)


@dataclass
class TrainResult:
    adapter_dir: Path
    log: list[dict[str, Any]]
    stopped_early: str | None


CE_PART_TOKENS = 16384
"""Candidate tokens (each candidate's prompt and completion) per part of a ce step; see `Trainer._ce_step`."""


def answer_key(output: str) -> str:
    """The answer an output stands for when the trainer watches for a collapse: its first line, case and edge punctuation
    ignored (as the label grader reads it), so "Negative", "negative." and "NEGATIVE" are one answer."""
    return normalise_label(first_line(output))[:80]


def collapsed(window: list[tuple[str, str]], share: float) -> str | None:
    """The answer the model prefers in at least `share` of recent groups although it is best in far fewer, else None.

    `window` holds (answer the model now gives the highest likelihood among the
    group's samples, answer with the highest reward) per group.
    """
    if len(window) < 6:
        return None
    top, n = Counter(p for p, _ in window).most_common(1)[0]
    deserved = sum(1 for _, b in window if b == top)
    return top if n / len(window) >= share and deserved / len(window) <= share - 0.2 else None


class Trainer:
    """A LoRA model and its optimiser, kept across rounds of fresh samples (on-policy training in rounds)."""

    def __init__(self, model_dir: str | Path, config: TrainConfig, *, pad_id: int = 0, init_adapter: str | Path | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        torch.manual_seed(config.seed)
        self.torch, self.config, self.pad_id = torch, config, pad_id
        self.rng = random.Random(config.seed)
        base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        if init_adapter is not None:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(base, str(init_adapter), is_trainable=True)
        else:
            n = base.config.num_hidden_layers
            layers = list(range(max(0, n - config.lora_layers), n)) if config.lora_layers else None
            self.model = get_peft_model(base, LoraConfig(r=config.rank, lora_alpha=config.alpha, target_modules=config.target_modules,
                                                         layers_to_transform=layers, lora_dropout=0.0, task_type="CAUSAL_LM"))
        self.model.train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=config.lr)
        self.log: list[dict[str, Any]] = []
        self.window: list[tuple[str, str]] = []  # (answer the model now prefers, best-rewarded answer) per group seen
        self.stopped: str | None = None  # why the last round stopped; `halted` when that ends the update (collapse, budget)
        self.halted = False
        self.started_collapsed: str | None = None
        self.samples_seen = self.groups_used = 0
        self._old: dict[int, Any] = {}
        self.behaviour_gap = 0.0
        self._order: list[str] = []  # ce: the groups still to come in this shuffled pass
        self.heldout_log: list[dict[str, Any]] = []
        """Held-out loss readings of an update that stops on them (`sia.loop.weight_lever.until_heldout_stops`)."""

    def usable_groups(self, samples: list[Sample]) -> dict[str, list[Sample]]:
        groups: dict[str, list[Sample]] = {}
        for s in samples:
            groups.setdefault(s.group, []).append(s)
        torch = self.torch
        if self.config.algorithm in ("grpo", "ce"):
            return {g: ss for g, ss in groups.items() if len(ss) > 1 and has_spread(torch.tensor([s.reward for s in ss]))}
        best = max((s.reward for s in samples), default=0.0)
        return {g: ss for g, ss in groups.items() if any(s.reward >= best and s.reward > 0 for s in ss)}

    def round(self, samples: list[Sample], steps: int, on_step: Callable[[dict[str, Any]], None] | None = None,
              time_left: Callable[[], float] | None = None) -> int:
        """Train `steps` steps on `samples`; returns the steps taken (fewer when nothing is usable, outputs collapse, or
        `time_left()` seconds no longer hold another step as long as the last: a slower CPU than the costs assumed)."""
        groups = self.usable_groups(samples)
        if self.config.algorithm == "ce" and self.config.negatives:
            groups = {g: hardest(ss, self.config.negatives, self.rng) for g, ss in groups.items()}
        self.samples_seen += len(samples)
        self.groups_used += len(groups)
        self.stopped, self.halted = None, False
        if not groups:
            self.stopped = "no usable groups (no reward spread)" if self.config.algorithm != "sft" else "no successful samples"
            return 0
        self._behaviour_gap(groups)
        k = min(self.config.prompts_per_step, len(groups))
        steps = min(steps, self.config.steps_for(len(groups)))
        if set(self._order) - set(groups):  # the order carries over between rounds on the same groups (held-out reads)
            self._order = []
        for done in range(1, steps + 1):
            if self.config.algorithm == "ce":  # shuffled passes: every prompt is seen once before any is seen twice
                if len(self._order) < k:
                    self._order += self.rng.sample(sorted(groups), len(groups))
                chosen, self._order = self._order[:k], self._order[k:]
            else:
                chosen = self.rng.sample(sorted(groups), k)
            t0 = time.monotonic()
            self._step(groups, chosen, on_step)
            if not self.stopped and time_left is not None and done < steps and time_left() < time.monotonic() - t0:
                self.stopped = f"the budget left held no more steps ({done} of {steps} taken, {time.monotonic() - t0:.0f}s a step)"
            if self.stopped:  # steps were taken: a collapse or the budget ends the update, not a want of data
                self.halted = True
                return done
        return steps

    def heldout_loss(self, samples: list[Sample]) -> float | None:
        """The objective on `samples` without a step (held-out groups): sft's likelihood loss of each group's best-rewarded
        samples, or ce's label loss; mean over groups, None when none is usable."""
        torch = self.torch
        groups = self.usable_groups(samples)
        if not groups:
            return None
        total = 0.0
        self.model.eval()
        try:
            with torch.no_grad():
                for ss in groups.values():
                    new, _, comp = shared_prompt_logprobs(self.model, [(s.prompt_ids, s.completion_ids) for s in ss], self.pad_id)
                    if self.config.algorithm == "ce":
                        loss, _ = _label_loss(torch, new, comp, ss, [(0, len(ss))])
                    else:
                        best = max(s.reward for s in ss)
                        mask = comp * torch.tensor([1.0 if s.reward >= best else 0.0 for s in ss])[:, None]
                        loss = -(new * mask).sum() / mask.sum().clamp(min=1)
                    total += float(loss)
        finally:
            self.model.train()
        return total / len(groups)

    def snapshot(self) -> dict[str, Any]:
        """A copy of the trainable (LoRA) weights, to come back to with `restore`."""
        return {k: v.detach().clone() for k, v in self.model.named_parameters() if v.requires_grad}

    def restore(self, weights: dict[str, Any]) -> None:
        with self.torch.no_grad():
            for k, v in self.model.named_parameters():
                if k in weights:
                    v.copy_(weights[k])

    def _behaviour_gap(self, groups: dict[str, list[Sample]]) -> None:
        """The trainer's own logprobs of this round's samples before any step: the "old" policy of the clipped ratio, and,
        against the recorded (behaviour) logprobs, the importance weights and the per-token gap between the two engines."""
        torch = self.torch
        self._old = {}
        if self.config.algorithm != "grpo" or self.config.grpo.is_cap <= 0:
            return
        gaps, n = 0.0, 0
        with torch.no_grad():
            for ss in groups.values():
                lp, _, mask = shared_prompt_logprobs(self.model, [(s.prompt_ids, s.completion_ids) for s in ss], self.pad_id)
                for i, s in enumerate(ss):
                    mine = lp[i, : len(s.completion_ids)]
                    self._old[id(s)] = mine
                    gaps += float((mine - torch.tensor(s.old_logprobs)).abs().sum())
                    n += len(s.completion_ids)
        self.behaviour_gap = gaps / max(n, 1)

    def _step(self, groups: dict[str, list[Sample]], chosen: list[str], on_step) -> None:
        torch, config, model = self.torch, self.config, self.model
        t0 = time.monotonic()
        batch_samples, adv, weight, spans = [], [], [], []
        for g in chosen:
            ss = groups[g]
            spans.append((len(batch_samples), len(batch_samples) + len(ss)))
            batch_samples += ss
            rewards_g = torch.tensor([s.reward for s in ss])
            adv += group_advantages(rewards_g, scale_std=config.grpo.scale_std).tolist() if config.algorithm == "grpo" else [0.0] * len(ss)
            weight += [1.0 if s.reward >= float(rewards_g.max()) else 0.0 for s in ss]
        if config.algorithm == "ce":  # its own forward and backward, in parts that fit in memory
            self._ce_step(groups, chosen, batch_samples, spans, on_step, t0)
            return
        pairs = [(s.prompt_ids, s.completion_ids) for s in batch_samples]
        new, logits, comp = shared_prompt_logprobs(model, pairs, self.pad_id)
        behaviour = torch.zeros_like(comp)
        for i, s in enumerate(batch_samples):
            behaviour[i, : len(s.old_logprobs)] = torch.tensor(s.old_logprobs)
        old, is_w = behaviour, None
        if self._old:
            old = torch.zeros_like(comp)
            for i, s in enumerate(batch_samples):
                old[i, : len(s.completion_ids)] = self._old[id(s)]
            is_w = importance_weights(old, behaviour, comp, config.grpo.is_cap)
        if config.algorithm == "grpo":
            advantages = torch.tensor(adv)
            ref = None
            if config.grpo.kl_coef > 0:
                with torch.no_grad(), model.disable_adapter():
                    ref, _, _ = shared_prompt_logprobs(model, pairs, self.pad_id)
            scores = None
            if config.grpo.token_selection == "entropy":
                scores = token_entropy(logits.detach())
            elif config.grpo.token_selection == "gmts":
                scores = gmts_scores(new, advantages)
            loss, stats = policy_loss(new, old, advantages, comp, config.grpo, ref, scores, is_w)
            if is_w is not None:
                stats["behaviour_gap"] = self.behaviour_gap
        else:  # SFT: likelihood of each group's best-rewarded samples only
            mask = comp * torch.tensor(weight)[:, None]
            loss = -(new * mask).sum() / mask.sum().clamp(min=1)
            stats = {"loss": float(loss.detach()), "kl": 0.0, "tokens": int(mask.sum())}
        self.opt.zero_grad()
        loss.backward()
        self._finish(new.detach(), comp, batch_samples, spans, stats, on_step, t0)

    def _ce_step(self, groups: dict[str, list[Sample]], chosen: list[str], batch_samples: list[Sample],
                 spans: list[tuple[int, int]], on_step, t0: float) -> None:
        """One ce step over `chosen`, its gradient accumulated over parts of at most `CE_PART_TOKENS` candidate tokens
        (candidates x their prompt and completion). Each candidate row keeps its prompt's keys and values for the
        backward pass: 16 prompts of 200 tokens with 20 labels each held more than 24 GB at once; in parts the peak is
        one part's. The loss is a mean over groups, so the parts' losses, weighted by their share of groups, add up to
        the step's loss and gradient. A calibrating harness's content-free scores (of `calibration_subset`) are shared
        by every part: computed once, the parts' gradients with respect to them are summed and carried into the weights
        in one backward pass, through the graph of that first pass when they fit one part, else by a pass with gradient
        in parts (`_bias_backward`). The gradient is the same as computing them with each part, which cost a pass per part
        and per content-free input (LawBench: 4 parts a step)."""
        torch = self.torch
        self.opt.zero_grad()
        parts = _in_parts(chosen, lambda g: sum(len(x.prompt_ids) + len(x.completion_ids) for x in groups[g]))
        batch_samples = calibration_subset(batch_samples, self.config.calibration_inputs, self.rng)
        bias = kept = self._bias(batch_samples, keep_graph=True)
        if bias is not None:
            bias = bias.detach().clone().requires_grad_(True)
        news, comps, seqs, totals, start = [], [], [], Counter(), 0
        for part in parts:
            ps, sp = [], []
            for g in part:
                sp.append((len(ps), len(ps) + len(groups[g])))
                ps += groups[g]
            new, _, comp = shared_prompt_logprobs(self.model, [(x.prompt_ids, x.completion_ids) for x in ps], self.pad_id)
            b = None if bias is None else bias[start: start + len(ps)]
            start += len(ps)
            loss, stats = _label_loss(torch, new, comp, ps, sp, b)
            (loss * len(part) / len(chosen)).backward()
            news.append(new.detach())
            comps.append(comp)
            seqs.append((new.detach() * comp).sum(-1) - (0 if b is None else b.detach()))
            for k, v in stats.items():
                totals[k] += v * (1 if k == "tokens" else len(part) / len(chosen))
        if bias is not None and bias.grad is not None:
            if kept.requires_grad:
                kept.backward(bias.grad)
            else:
                self._bias_backward(batch_samples, bias.grad)
        width = max(n.shape[1] for n in news)
        pad = torch.nn.functional.pad
        new = torch.cat([pad(n, (0, width - n.shape[1])) for n in news])
        comp = torch.cat([pad(c, (0, width - c.shape[1])) for c in comps])
        stats = {k: (int(v) if k == "tokens" else float(v)) for k, v in totals.items()}
        stats["parts"] = len(parts)
        self._finish(new, comp, batch_samples, spans, stats, on_step, t0, torch.cat(seqs))

    def _finish(self, new, comp, batch_samples: list[Sample], spans: list[tuple[int, int]], stats: dict[str, Any], on_step,
                t0: float, seq_lp=None) -> None:
        """Clip and apply the accumulated gradient; log the step; watch for a collapse onto one answer. The answer the model
        prefers in a group is the one with the highest `seq_lp` (default: the sequence log-likelihood; ce on a calibrating
        harness passes it less the content-free bias, the choice the harness makes)."""
        torch, config = self.torch, self.config
        torch.nn.utils.clip_grad_norm_(self.params, config.max_grad_norm)
        self.opt.step()
        if seq_lp is None:
            seq_lp = (new * comp).sum(-1)
        for a, b in spans:
            prefer = a + int(seq_lp[a:b].argmax())
            best = a + max(range(b - a), key=lambda i: batch_samples[a + i].reward)
            self.window.append((answer_key(batch_samples[prefer].output), answer_key(batch_samples[best].output)))
        self.window = self.window[-config.prompts_per_step * config.collapse_patience:]
        rewards = [s.reward for s in batch_samples]
        mean = sum(rewards) / len(rewards)
        entry = {
            "step": len(self.log) + 1,
            "reward_mean": mean,
            "reward_std": (sum((r - mean) ** 2 for r in rewards) / len(rewards)) ** 0.5,
            **stats,
            "outputs": dict(Counter(s.output for s in batch_samples).most_common(5)),
            "predicted": dict(Counter(p for p, _ in self.window[-len(spans) :]).most_common(5)),
            "seconds": round(time.monotonic() - t0, 3),
        }
        self.log.append(entry)
        if on_step:
            on_step(entry)
        if len(self.log) >= config.collapse_patience and (label := collapsed(self.window, config.collapse_share)):
            if len(self.log) == config.collapse_patience:  # the window holds the model as it started: a bias to train away
                self.started_collapsed = label
            elif label != self.started_collapsed:
                self.stopped = f"the model's preferred answers collapsed onto {label!r} over the last {config.collapse_patience} steps"

    def _bias(self, batch_samples: list[Sample], keep_graph: bool = False):
        """Each sample's mean score on the content-free inputs of its calibrating harness, or None; with `keep_graph`, and
        when those inputs fit one part (`CE_PART_TOKENS`), with the graph their gradient can flow back through."""
        if not any(s.bias for s in batch_samples):
            return None
        pairs = sorted({pair for s in batch_samples for pair in s.bias})
        keep = keep_graph and sum(len(p) + len(c) for p, c in pairs) <= CE_PART_TOKENS
        with self.torch.set_grad_enabled(keep):  # one content-free prompt serves every example: computed once
            seq = dict(zip(pairs, self._pair_scores(pairs)))
        return self.torch.stack(
            [self.torch.stack([seq[p] for p in s.bias]).mean() if s.bias else self.torch.zeros(()) for s in batch_samples]
        )

    def _pair_scores(self, pairs: list[tuple[tuple[int, ...], tuple[int, ...]]]):
        lp, _, mask = shared_prompt_logprobs(self.model, [(list(p), list(c)) for p, c in pairs], self.pad_id)
        return (lp * mask).sum(-1)

    def _bias_backward(self, batch_samples: list[Sample], grad) -> None:
        """Add to the weights' gradient what flows through the content-free scores, given `grad`, the loss's gradient
        with respect to each sample's bias: each content-free candidate gets the sum over the samples that average it,
        and its score is computed again with gradient, in parts of at most `CE_PART_TOKENS` tokens."""
        upstream: dict[tuple, float] = {}
        for s, g in zip(batch_samples, grad.tolist()):
            for pair in s.bias:
                upstream[pair] = upstream.get(pair, 0.0) + g / len(s.bias)
        for chunk in _in_parts(sorted(upstream), lambda pair: len(pair[0]) + len(pair[1])):
            (self._pair_scores(chunk) * self.torch.tensor([upstream[p] for p in chunk])).sum().backward()

    def save(self, out_dir: str | Path, lineage: dict[str, Any] | None = None, canary: list[Sample] | None = None) -> Path:
        """Write the adapter in PEFT's layout with sia_training.json, and a canary from `canary`'s samples (the check that
        whatever serves the adapter serves this one, `sia.policy.adapters`); the folder appears whole or not at all."""
        from sia.policy.adapters import write_canary

        out_dir = Path(out_dir)
        tmp = out_dir.with_name(out_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(tmp)
        if canary:
            write_canary(tmp, canary_sequences(canary))
        (tmp / "sia_training.json").write_text(
            json.dumps(
                {
                    "config": self.config.model_dump(),
                    "lineage": lineage or {},
                    "log": self.log,
                    "stopped_early": self.stopped,
                    "samples": self.samples_seen,
                    "heldout": self.heldout_log,
                    "groups_used": self.groups_used,
                },
                indent=1,
                default=str,
            )
        )
        shutil.rmtree(out_dir, ignore_errors=True)
        tmp.rename(out_dir)
        return out_dir


CANARIES, CANARY_PROMPT_TOKENS, CANARY_SCORED_PROMPT = 4, 256, 32


def canary_sequences(samples: list[Sample]) -> list[tuple[list[int], int]]:
    """The best-rewarded sample of each of the first `CANARIES` groups, as (prompt tail + completion, where scoring
    starts): the completion (tokens the update was trained to move, so another adapter served in its place shows) and
    the last `CANARY_SCORED_PROMPT` prompt tokens before it (more tokens, less of an engine's noise in the mean)."""
    best: dict[str, Sample] = {}
    for s in samples:
        if s.completion_ids and (s.group not in best or s.reward > best[s.group].reward):
            best[s.group] = s
    out = []
    for g in sorted(best)[:CANARIES]:
        prompt = list(best[g].prompt_ids)[-CANARY_PROMPT_TOKENS:]
        out.append((prompt + list(best[g].completion_ids), max(1, len(prompt) - CANARY_SCORED_PROMPT)))
    return out


def _in_parts(items: list, tokens: Callable[[Any], int]) -> list[list]:
    """`items` in order, in consecutive parts of at most `CE_PART_TOKENS` tokens (an item larger than that alone)."""
    parts, part, used = [], [], 0
    for item in items:
        if part and used + tokens(item) > CE_PART_TOKENS:
            parts.append(part)
            part, used = [], 0
        part.append(item)
        used += tokens(item)
    return parts + [part] if part else parts


def _label_loss(torch, new, comp, batch_samples: list[Sample], spans: list[tuple[int, int]], bias=None) -> tuple[Any, dict[str, float]]:
    """Cross-entropy of each group's best-rewarded candidates against the others (softmax over the candidates' sequence
    log-likelihoods, less their content-free `bias` for a calibrating harness), plus the gold candidates' own token-mean
    NLL where the group is `absolute`; averaged over groups."""
    seq = (new * comp).sum(-1)
    if bias is not None:
        seq = seq - bias
    losses, right, nll_sum = [], 0, 0.0
    for a, b in spans:
        rewards = torch.tensor([s.reward for s in batch_samples[a:b]])
        gold = rewards >= rewards.max()
        logp = torch.log_softmax(seq[a:b], dim=0)
        loss = -logp[gold].mean()
        if batch_samples[a].absolute:
            tok = (new[a:b][gold] * comp[a:b][gold]).sum(-1) / comp[a:b][gold].sum(-1).clamp(min=1)
            nll = -tok.mean()
            nll_sum += float(nll.detach())
            loss = loss + nll
        losses.append(loss)
        right += int(bool(gold[int(seq[a:b].detach().argmax())]))
    loss = torch.stack(losses).mean()
    return loss, {
        "loss": float(loss.detach()),
        "kl": 0.0,
        "label_accuracy": right / len(spans),
        "gold_nll": nll_sum / len(spans),
        "tokens": int(comp.sum()),
    }


def train(
    model_dir: str | Path,
    samples: list[Sample],
    config: TrainConfig,
    out_dir: str | Path,
    *,
    pad_id: int = 0,
    lineage: dict[str, Any] | None = None,
    init_adapter: str | Path | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train a LoRA adapter on one batch of collected `samples` and save it, in PEFT's layout, to `out_dir`."""
    trainer = Trainer(model_dir, config, pad_id=pad_id, init_adapter=init_adapter)
    trainer.round(samples, config.steps, on_step)
    trainer.save(out_dir, lineage)
    return TrainResult(Path(out_dir), trainer.log, trainer.stopped)
