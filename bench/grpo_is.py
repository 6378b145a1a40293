"""GRPO on samples drawn by the quantized llama.cpp policy, with and without the importance correction, against samples
drawn by the HF policy the trainer shares its weights with: held-out sentiment test accuracy, same seeds.

Arms, each over the same seeds, prompts and sampling seeds:
  hf         samples from the HF (fp32) policy: behaviour and trainer agree up to float error ("before" the llama.cpp engine)
  llama+is   samples from the llama.cpp policy (Q8_0 weights, the adapter converted to GGUF), trainer/behaviour ratio
             per token capped at `is_cap` (sia's default)
  llama      the same samples, no correction (`is_cap` 0): the recorded llama.cpp logprobs stand in for the old policy

Each run trains a fresh LoRA in on-policy rounds, as the loop's weight lever does with a sampling harness: a round
collects `--examples` train prompts x 8 samples through its engine with the adapter trained so far, credits them with the
task's grader and takes the preset's steps (sia's SAMPLING_PRESET: entropy token selection, lr 1e-3). After the last round
the adapter answers the 200 test reviews greedily through the HF policy, so every arm is judged by the same engine. Printed:
per run, test accuracy, answer distribution (a collapse onto one label shows there), mean train reward of the last round
and the mean per-token |trainer - behaviour| logprob gap; then each arm's mean over seeds. The benchmark records numbers;
it asserts nothing.

    python bench/grpo_is.py [--seeds 3] [--rounds 8] [--arms hf,llama+is,llama]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MAX_TOKENS = 16


def _fmt(gap: float | None) -> str:
    return "-" if gap is None else f"{gap:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--examples", type=int, default=8, help="train prompts collected per round")
    ap.add_argument("--arms", default="hf,llama+is,llama")
    ap.add_argument("--lr", type=float, default=None, help="learning rate (default: the preset's)")
    ap.add_argument("--out", default=None, help="write every run's per-example test scores to this JSON file")
    args = ap.parse_args()

    from sia.policy.llama import LlamaPolicy
    from sia.policy.local import GenRequest, LocalPolicy
    from sia.task.loading import load_task
    from sia.weights.config import SAMPLING_PRESET, plan
    from sia.weights.samples import Sample
    from sia.weights.trainer import Trainer, answer_key

    task = load_task("sentiment")
    instruction = task.public_info()["instruction"]
    train, test = task.split("train"), task.split("test")
    hf = LocalPolicy()
    engines = {"hf": hf, "llama": LlamaPolicy()}
    prompt = {ex.id: hf.encode(hf.render_chat([{"role": "user", "content": f"{instruction}\n\n{ex.inputs['text']}"}]))
              for ex in train + test}

    def answers(policy, model, examples, temperature=0.0, samples=1, seed=0):
        reqs = [GenRequest(prompt[ex.id], MAX_TOKENS, temperature, 1.0, [], seed + 100 * i + k)
                for i, ex in enumerate(examples) for k in range(samples)]
        out = []
        for k in range(0, len(reqs), 64):  # the policy service's batches are of this order
            out += policy.generate(reqs[k:k + 64], model=model)
        return out

    def test_scores(model):
        results = answers(hf, model, test)
        scores = {ex.id: task.grade(ex, r.text).score for ex, r in zip(test, results)}
        firsts = Counter(answer_key(r.text)[:12] for r in results)
        return scores, firsts

    base_scores, base_firsts = test_scores(None)
    print(f"base model: test {statistics.mean(base_scores.values()):.3f}  answers {dict(base_firsts.most_common(3))}", flush=True)
    runs, work = [], Path(tempfile.mkdtemp(prefix="sia-grpo-is-"))
    for seed in range(args.seeds):
        for arm in args.arms.split(","):
            engine = engines["hf" if arm == "hf" else "llama"]
            settings = dict(SAMPLING_PRESET, rounds=args.rounds, examples=args.examples, seed=seed,
                            is_cap=0.0 if arm == "llama" else 2.0, lr=args.lr or SAMPLING_PRESET["lr"])
            wp = plan("grpo", settings)
            trainer = Trainer(hf.model_path, wp.train, pad_id=hf.pad_id)
            rng, name, gaps, t_collect, t_train = random.Random(seed), None, [], 0.0, 0.0
            for r in range(wp.rounds):
                t0 = time.monotonic()
                batch = rng.sample(train, wp.examples)
                results = answers(engine, name, batch, wp.temperature, wp.samples, seed=10_000 * seed + 1000 * r)
                samples = [Sample(f"{ex.id}@{r}", prompt[ex.id], res.token_ids, res.logprobs,
                                  task.grade(ex, res.text).score, res.text.strip()[:12])
                           for ex, res in zip((ex for ex in batch for _ in range(wp.samples)), results) if res.token_ids]
                t1 = time.monotonic()
                trainer.round(samples, wp.train.steps)
                if wp.train.grpo.is_cap > 0:  # measured only where the correction runs
                    gaps.append(trainer.behaviour_gap)
                name = f"s{seed}{arm.replace('+', '')}r{r}"
                trainer.save(work / name)
                engine.load_adapter(name, work / name)  # the next round samples with the adapter trained so far
                t_train += time.monotonic() - t1
                t_collect += t1 - t0
            reward = statistics.mean(s.reward for s in samples)
            hf.load_adapter(name, work / name)
            scores, firsts = test_scores(name)
            acc = statistics.mean(scores.values())
            runs.append(
                {
                    "arm": arm,
                    "seed": seed,
                    "test": acc,
                    "answers": dict(firsts.most_common(3)),
                    "last_round_reward": reward,
                    "gap": statistics.mean(gaps) if gaps else None,
                    "steps": len(trainer.log),
                    "collect_s": t_collect,
                    "train_s": t_train,
                    "scores": scores,
                }
            )
            print(
                f"  {arm:9s} seed {seed}: test {acc:.3f}  answers {dict(firsts.most_common(3))}  last-round reward {reward:.2f}  "
                f"gap {_fmt(runs[-1]['gap'])}/token  {len(trainer.log)} steps  collect {t_collect:.0f}s train {t_train:.0f}s",
                flush=True,
            )
    print(
        f"\nsentiment, {args.seeds} seeds x {args.rounds} rounds of {args.examples} prompts x 8 samples (SAMPLING_PRESET, "
        f"lr {args.lr or SAMPLING_PRESET['lr']}), "
        f"held-out test {len(test)} examples, base {statistics.mean(base_scores.values()):.3f}"
    )
    print(f"{'arm':<11}{'test mean':>10}{'per seed':>24}{'gap/token':>11}{'collect s':>11}{'train s':>9}")
    for arm in args.arms.split(","):
        rs = [x for x in runs if x["arm"] == arm]
        per_seed = " ".join(f"{x['test']:.3f}" for x in rs)
        gaps = [x["gap"] for x in rs if x["gap"] is not None]
        print(
            f"{arm:<11}{statistics.mean(x['test'] for x in rs):>10.3f}{per_seed:>24}"
            f"{_fmt(statistics.mean(gaps) if gaps else None):>11}{statistics.mean(x['collect_s'] for x in rs):>11.0f}"
            f"{statistics.mean(x['train_s'] for x in rs):>9.0f}"
        )
    if args.out:
        Path(args.out).write_text(json.dumps({"base": base_scores, "runs": runs}, indent=1))
        print(f"written: {args.out}")


if __name__ == "__main__":
    main()
