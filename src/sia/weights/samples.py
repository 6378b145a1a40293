"""Training samples from the model calls the policy service recorded during rollouts.

The trainer never re-runs or re-implements the harness: it reads the rollouts
of an evaluation from the run store and turns each recorded model call into
samples, grouped by example (a GRPO group).

- A generation call (chat or completion) gives one sample per completion: the
  prompt token ids, the sampled token ids and the behaviour policy's logprobs,
  credited with the whole rollout's reward.
- A scoring call (completions with echo, one prompt per candidate
  continuation, as `ctx.llm.logprobs` sends) gives one sample per candidate:
  the shared prefix is the prompt, the rest of each scored prompt is the
  completion, and its reward is what the task's grader gives that candidate
  as the answer. The group is then the exact set of answers the harness chose
  between, so the policy gradient needs no sampling. A scored prompt that
  several examples share (a content-free calibration input) says nothing about
  any one example and is skipped.

For sft on gold answers (`gold_samples`), a rollout's first generation call
gives one sample: its prompt, completed by the example's gold answer and the
end of the turn: a supervised fine-tune on the prompts the harness builds.

For the ce objective on a labelled task (`label_samples`), a generation call
gives a group of candidates instead: its prompt, followed by each label and the
end of the turn, credited with what the grader gives that label. The group is
the label set the harness's parser chooses from, so the model learns to reply
with the gold label to the very prompts the harness builds (only the first
generation call of a rollout: a retry's prompt holds the model's own failed
reply).

Simplification on purpose: every call of a rollout gets the rollout's reward;
there is no per-call credit assignment. A rollout whose harness fell back to
the task's baseline (it logs `FALLBACK_NOTE`) gives no samples: its reward
says nothing about the model's replies.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from sia.harness.template_programs import FALLBACK_NOTE
from sia.policy.local import common_prefix

Grade = Callable[[str, str], float]
"""grade(example_id, answer_text) -> reward; only needed for scoring calls."""


@dataclass(frozen=True)
class Sample:
    """One recorded completion, credited with a reward."""
    group: str
    prompt_ids: list[int]
    completion_ids: list[int]
    old_logprobs: list[float]
    reward: float
    output: str
    """The answer the sample stands for: its rollout's output, or the candidate a scoring or label group holds."""
    absolute: bool = False
    """ce: also raise the gold candidate's own likelihood (a generated reply must start with it), not only its share of
    the label set (what a scoring harness compares)."""
    bias: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] = ()
    """ce on a calibrating harness: this candidate as the same rollout scored it on each content-free input, as (prompt,
    completion) token ids. The harness subtracts their mean score, so the trained choice is the calibrated one."""


def _generation_samples(example_id: str, d: dict[str, Any], reward: float, output: str) -> list[Sample]:
    prompts = [d.get("prompt_token_ids")] if d.get("kind") == "chat" else [p.get("prompt_token_ids") for p in d.get("prompts", [])]
    comps = d.get("completions", [])
    per_prompt = max(1, len(comps) // max(1, len(prompts)))
    out = []
    for i, c in enumerate(comps):
        prompt = prompts[min(i // per_prompt, len(prompts) - 1)]
        if prompt and c.get("token_ids") and c.get("logprobs") and len(c["token_ids"]) == len(c["logprobs"]):
            out.append(Sample(example_id, list(prompt), list(c["token_ids"]), list(c["logprobs"]), reward, output))
    return out


def _score_samples(example_id: str, d: dict[str, Any], grade: Grade, aliases: dict[str, str]) -> list[Sample]:
    prompts = [p for p in d.get("prompts", []) if p.get("prompt_token_ids") and p.get("prompt_logprobs")]
    if len(prompts) < 2:
        return []
    ids = [p["prompt_token_ids"] for p in prompts]
    cut = common_prefix(ids)
    text_cut = len(_common_text(prompts))
    out = []
    for p in prompts:
        comp, lps = p["prompt_token_ids"][cut:], p["prompt_logprobs"][cut:]
        if not comp or any(lp is None for lp in lps):
            return []  # a candidate with no tokens of its own cannot be trained on
        answer = p["prompt"][text_cut:].strip()
        answer = aliases.get(answer, answer)
        out.append(Sample(example_id, list(p["prompt_token_ids"][:cut]), list(comp), [float(x) for x in lps],
                          float(grade(example_id, answer)), answer))
    return out


def _common_text(prompts: list[dict[str, Any]]) -> str:
    texts = [p["prompt"] for p in prompts]
    n = min(len(t) for t in texts)
    i = 0
    while i < n and all(t[i] == texts[0][i] for t in texts):
        i += 1
    return texts[0][:i]


def _label_group(example_id: str, d: dict[str, Any], grade: Grade, labels: list[str], encode: Callable[[str], list[int]],
                 end_ids: list[int]) -> list[Sample]:
    prompt = d.get("prompt_token_ids") if d.get("kind") == "chat" else next(
        (p.get("prompt_token_ids") for p in d.get("prompts", [])), None)
    if not prompt:
        return []
    return [Sample(example_id, list(prompt), encode(label) + list(end_ids), [], float(grade(example_id, label)), label, absolute=True)
            for label in labels]


def samples_from_store(store, evaluation_id: str, grade: Grade | None = None, *, labels: list[str] | None = None,
                       encode: Callable[[str], list[int]] | None = None, end_ids: list[int] | None = None,
                       aliases: dict[str, str] | None = None, inputs: dict[str, str] | None = None) -> list[Sample]:
    """Every recorded completion of an evaluation's rollouts, as samples grouped by example.

    With `labels` (the ce objective; needs `grade` and `encode`), a rollout's
    first generation call gives its label group instead of its sampled
    completions (none when the task has no label set). `aliases` maps a scored
    word to the answer it stands for (a harness that scores other words than
    the label names).
    """
    gen: list[Sample] = []
    scored: list[tuple[str, str, str, list[Sample]]] = []  # (shared prefix text, example id, rollout id, samples)
    labelled: set[tuple[str, tuple[int, ...]]] = set()  # (example, prompt) label groups taken: one each
    for r in store.rollouts(evaluation_id):
        output = r.output if isinstance(r.output, str) else json.dumps(r.output)
        events = store.events(r.id)
        if any(ev.kind == "log" and ev.data.get("message") == FALLBACK_NOTE for ev in events):
            continue  # the reward was earned by the task's baseline, not by the model's replies
        first = True
        for ev in events:
            d = ev.data
            if ev.kind != "llm_call":
                continue
            if d.get("kind") in ("chat", "completion") and labels is not None:
                group = _label_group(r.example_id, d, grade, labels, encode, end_ids or []) if (
                    first and labels and encode is not None and grade is not None) else []
                if group and (r.example_id, tuple(group[0].prompt_ids)) not in labelled:
                    labelled.add((r.example_id, tuple(group[0].prompt_ids)))
                    gen += group
                first = False
            elif d.get("kind") in ("chat", "completion"):
                gen += _generation_samples(r.example_id, d, float(r.score), output)
            elif d.get("kind") == "score" and grade is not None:
                ss = _score_samples(r.example_id, d, grade, aliases or {})
                if ss:
                    scored.append((_common_text(d["prompts"]), r.example_id, r.id, ss))
    examples_of: dict[str, set[str]] = {}
    for prefix, ex, _, _ in scored:
        examples_of.setdefault(prefix, set()).add(ex)

    def free_of_input(prefix: str, ex: str) -> bool:
        """A content-free prompt: several examples share it, or it does not show its example's input (demonstrations
        chosen per input make each example's content-free prompt its own)."""
        shown = (inputs or {}).get(ex, "").strip()[:40]
        return len(examples_of[prefix]) > 1 or bool(shown) and shown not in prefix

    content_free: dict[str, list[list[Sample]]] = {}  # rollout -> its content-free scored groups
    for prefix, ex, rid, ss in scored:
        if free_of_input(prefix, ex):
            content_free.setdefault(rid, []).append(ss)
    seen: set[tuple[str, str]] = set()
    for prefix, ex, rid, ss in scored:
        if not free_of_input(prefix, ex) and (prefix, ex) not in seen:  # one group per distinct scored prompt
            seen.add((prefix, ex))
            free = [b for b in content_free.get(rid, []) if len(b) == len(ss)]
            gen += [replace(x, bias=tuple((tuple(b[i].prompt_ids), tuple(b[i].completion_ids)) for b in free))
                    for i, x in enumerate(ss)] if free else ss
    return gen


def hardest(group: list[Sample], negatives: int, rng: random.Random) -> list[Sample]:
    """A ce group's gold candidates and its `negatives` wrong ones that the harness scored highest when collecting
    (random ones when no scores were recorded, as for a generating harness), in the group's order."""
    best = max(s.reward for s in group)
    wrong = [i for i, s in enumerate(group) if s.reward < best]
    if len(wrong) <= negatives:
        return group
    if all(group[i].old_logprobs for i in wrong):
        keep = set(sorted(wrong, key=lambda i: -sum(group[i].old_logprobs))[:negatives])
    else:
        keep = set(rng.sample(wrong, negatives))
    return [s for i, s in enumerate(group) if s.reward >= best or i in keep]


def calibration_subset(samples: list[Sample], k: int, rng: random.Random) -> list[Sample]:
    """`samples` with `k` of their content-free inputs (`Sample.bias`), drawn at random (the same ones for every sample),
    or all of them when `k` is 0 or they have no more; see `TrainConfig.calibration_inputs`."""
    n = max((len(s.bias) for s in samples), default=0)
    if not k or n <= k:
        return samples
    keep = sorted(rng.sample(range(n), k))
    return [replace(s, bias=tuple(s.bias[i] for i in keep if i < len(s.bias)) or s.bias) for s in samples]


def gold_samples(store, evaluation_id: str, gold: dict[str, str], encode: Callable[[str], list[int]], end_ids: list[int]
                 ) -> list[Sample]:
    """One sample per example: the prompt of its rollout's first generation call, completed by the example's gold answer
    (`gold`: example id -> answer text) and `end_ids`, reward 1."""
    out, seen = [], set()
    for r in store.rollouts(evaluation_id):
        if r.example_id in seen or r.example_id not in gold:
            continue
        for ev in store.events(r.id):
            d = ev.data
            if ev.kind != "llm_call" or d.get("kind") not in ("chat", "completion"):
                continue
            prompt = d.get("prompt_token_ids") if d.get("kind") == "chat" else next(
                (p.get("prompt_token_ids") for p in d.get("prompts", [])), None)
            if prompt:
                answer = gold[r.example_id]
                out.append(Sample(r.example_id, list(prompt), encode(answer) + list(end_ids), [], 1.0, answer))
                seen.add(r.example_id)
            break
    return out
