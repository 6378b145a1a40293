"""The fixed recipes a practitioner would run on a zoo task without sia: the bar sia's loop must clear.

- **majority**: the commonest gold answer of the train split, given for every test example.
- **template**: the Meta-Agent's template harness on the base model (`sia eval --split test`).
- **knn** (labelled tasks): nearest neighbours over the policy model's own embeddings of the train
  inputs (the mean final hidden state, as sia's service embeds); k is chosen on val from 1, 3, 5,
  9, 15 and 25, then test examples take the majority label of their k nearest train examples.
- **finetune**: one LoRA fine-tune (PEFT, sia's default rank and targets) on the whole train split
  with a held-out tenth (at most 64 examples) for early stopping, on the template harness's own prompts: cross-entropy
  over the label set's sequence likelihoods for labelled tasks (the gold label against the
  others), the likelihood of the gold answer otherwise. Evaluation every quarter epoch on the
  held-out slice (and once more when the budget ends between two readings); training stops when it
  has not improved twice or the budget is spent, and the best adapter is scored with the template
  harness (`sia eval --adapter`). A labelled example's candidates share one forward pass.

Each returns per-example test scores (example id -> score), so the zoo table pairs them with sia's.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

SIA = str(Path(sys.executable).parent / "sia")
KS = (1, 3, 5, 9, 15, 25)


def gold_of(task) -> Any:
    base = getattr(task.grader, "func", task.grader)
    return base.gold


def majority(task) -> dict[str, float]:
    gold = gold_of(task)
    answer = Counter(gold(e) for e in task.split("train")).most_common(1)[0][0]
    return {e.id: task.grade(e, answer).score for e in task.split("test")}


def sia_eval(task_ref: str, run_dir: Path, adapter: Path | None = None, extra: list[str] | None = None) -> dict[str, float]:
    """Per-example test scores of the template harness (with `adapter`), from a real `sia eval`."""
    from sia.store.store import Store

    cmd = [SIA, "eval", task_ref, "--split", "test", "--run-dir", str(run_dir), "--json", "--concurrency", "16",
           *(["--adapter", str(adapter)] if adapter else []), *(extra or [])]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"sia eval failed: {r.stderr[-1500:]}")
    summary = json.loads(r.stdout)
    with Store(run_dir, write=False) as store:
        return _from_rows(store, summary["evaluation_id"])


def _from_rows(store, evaluation_id: str) -> dict[str, float]:
    by: dict[str, list[float]] = {}
    for r in store.rollouts(evaluation_id):
        by.setdefault(r.example_id, []).append(r.score)
    return {k: sum(v) / len(v) for k, v in by.items()}


def _shown(task, example) -> str:
    """An example's visible fields as the template harness shows them."""
    from sia.harness.template import make_config, show

    return show(make_config(task.public_info()), example.inputs)


def knn(task) -> dict[str, float]:
    """Majority label of the k nearest train examples in the policy's embedding space; k chosen on val."""
    import numpy as np

    from sia.policy.local import LocalPolicy, LocalPolicyConfig

    policy = LocalPolicy(LocalPolicyConfig())
    gold = gold_of(task)

    def vectors(examples):
        v = np.array(policy.embed([policy.encode(_shown(task, e))[:1024] for e in examples]), dtype=np.float32)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)

    train, val, test = task.split("train"), task.split("val"), task.split("test")
    tv, answers = vectors(train), [gold(e) for e in train]

    def predict(examples, k):
        sims = vectors(examples) @ tv.T
        out = []
        for row in sims:
            near = np.argsort(-row)[:k]
            votes = Counter(answers[i] for i in near)
            top = max(votes.values())
            out.append(next(answers[i] for i in near if votes[answers[i]] == top))  # ties: the nearest of the tied
        return out

    val_preds = {k: predict(val, k) for k in KS if k <= len(train)}
    best = max(val_preds, key=lambda k: (sum(task.grade(e, p).score for e, p in zip(val, val_preds[k])), -k))
    return {e.id: task.grade(e, p).score for e, p in zip(test, predict(test, best))}


def finetune(task, task_ref: str, work: Path, budget_s: float, seed: int = 0) -> tuple[dict[str, float], dict[str, Any]]:
    """LoRA fine-tune on the train split's gold answers with early stopping on a held-out tenth; test scores with it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sia.agents.meta import initial_harness
    from sia.policy.embedded import embedded_model_dir

    t0 = time.monotonic()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    source, _ = initial_harness(task)
    ns: dict[str, Any] = {}
    exec(compile(source, "harness", "exec"), ns)
    tok = AutoTokenizer.from_pretrained(str(embedded_model_dir()))
    model = AutoModelForCausalLM.from_pretrained(str(embedded_model_dir()), dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    gold, labels = gold_of(task), list(task.labels)

    def prompt(e) -> list[int]:
        messages = ns["build_messages"](e.visible()) if task.spec.output == "text" else ns["build_messages"](e.visible(), None)
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return tok(text, add_special_tokens=False)["input_ids"][-1536:]

    train = task.split("train")
    rng.shuffle(train)
    cut = min(64, max(8, len(train) // 10))
    held, fit = train[:cut], train[cut:]
    cache = {e.id: prompt(e) for e in train}
    end_id = tok.convert_tokens_to_ids("<|im_end|>")

    def seq_logprobs(p: list[int], answers: list[str]) -> torch.Tensor:
        """Each answer's (and the end of the turn's) log-likelihood after prompt `p`, all answers in one forward pass."""
        conts = [tok(a, add_special_tokens=False)["input_ids"] + [end_id] for a in answers]
        width = len(p) + max(len(c) for c in conts)
        ids = torch.full((len(conts), width), end_id, dtype=torch.long)
        mask = torch.zeros((len(conts), width), dtype=torch.long)
        for i, c in enumerate(conts):
            ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            mask[i, : len(p) + len(c)] = 1
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
        return torch.stack([logp[i, len(p) - 1 : len(p) - 1 + len(c)].gather(1, torch.tensor(c)[:, None]).sum()
                            for i, c in enumerate(conts)])

    def loss_of(e) -> torch.Tensor:
        p = cache[e.id]
        if labels and task.spec.output == "text" and not task.spec.multi_label:
            scores = seq_logprobs(p, labels)
            right = labels.index(str(gold(e)))
            return -torch.log_softmax(scores, 0)[right] - scores[right]  # the gold label against the others, and generated
        return -seq_logprobs(p, [str(gold(e))])[0]

    def held_loss() -> float:
        model.eval()
        with torch.no_grad():
            value = sum(float(loss_of(e)) for e in held) / len(held)
        model.train()
        return value

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4)
    batch, every = 4, max(1, len(fit) // 16)  # a step is 4 examples; the held-out slice is read every quarter epoch
    best, bad, steps, log = held_loss(), 0, 0, []
    best_dir = work / "adapter"
    model.save_pretrained(str(best_dir))
    log.append({"step": 0, "held_loss": best, "s": round(time.monotonic() - t0, 1)})
    train_budget = budget_s * 0.6  # the rest is for scoring test with the adapter
    while time.monotonic() - t0 < train_budget and bad < 2:
        rng.shuffle(fit)
        for start in range(0, len(fit), batch):
            loss = sum(loss_of(e) for e in fit[start:start + batch]) / batch
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            steps += 1
            if steps % every == 0:
                value = held_loss()
                log.append({"step": steps, "held_loss": value, "train_loss": float(loss.detach()), "s": round(time.monotonic() - t0, 1)})
                print(f"    finetune step {steps}: held-out loss {value:.4f} (best {best:.4f})", flush=True)
                if value < best - 1e-4:
                    best, bad = value, 0
                    model.save_pretrained(str(best_dir))
                else:
                    bad += 1
            if bad >= 2 or time.monotonic() - t0 >= train_budget:
                break
    if steps and steps % every:  # the budget ended between two readings: read once more, keep it if better
        value = held_loss()
        log.append({"step": steps, "held_loss": value, "s": round(time.monotonic() - t0, 1)})
        if value < best - 1e-4:
            best = value
            model.save_pretrained(str(best_dir))
    info = {"steps": steps, "best_held_loss": best, "log": log, "train_s": round(time.monotonic() - t0, 1),
            "stopped": "held-out loss stopped improving" if bad >= 2 else "budget"}
    scores = sia_eval(task_ref, work / "eval", adapter=best_dir)
    return scores, info


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan
