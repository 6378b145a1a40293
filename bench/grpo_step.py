"""Seconds per GRPO step: sia's trainer against TRL's GRPOTrainer, same model, batch and lengths, in one run.

Both train a LoRA (r=16 on q_proj, v_proj, lr 3e-4) on the embedded
SmolLM2-135M-Instruct with 4 sentiment prompts x 8 samples per step, completions
of at most 20 tokens, no KL, fp32 on CPU. A TRL step generates its samples
itself; a sia step does not (the loop collects them through the harness), so
sia's step is timed as generation by sia's policy (the same 32 samples, batched
as the policy service batches them) plus one `Trainer` update, and both parts are
printed. The first step of each is a warm-up and is not counted.

TRL is not a dependency of sia; `make bench` installs it (see requirements-bench.txt).

    python bench/grpo_step.py [--steps 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS, SAMPLES, MAX_TOKENS, LR = 4, 8, 20, 3e-4


def prompts():
    from sia.task.loading import load_task

    task = load_task("sentiment")
    info = task.public_info()
    exs = task.split("train")[: PROMPTS * 8]
    return [([{"role": "user", "content": info["instruction"] + "\n\n" + ex.inputs["text"]}], ex.target["label"]) for ex in exs]


def reward(text: str, label: str) -> float:
    first = text.strip().splitlines()[0].strip(" .!:*\"'").lower() if text.strip() else ""
    return 1.0 if first == label else 0.0


def bench_sia(data, steps: int) -> tuple[list[float], list[float]]:
    from sia.policy.local import GenRequest, LocalPolicy
    from sia.weights.config import TrainConfig
    from sia.weights.samples import Sample
    from sia.weights.trainer import Trainer

    policy = LocalPolicy()
    trainer = Trainer(policy.model_path, TrainConfig(lr=LR, prompts_per_step=PROMPTS, steps=1), pad_id=policy.pad_id)
    gen_s, train_s = [], []
    for step in range(steps + 1):
        batch = data[(step * PROMPTS) % len(data):][:PROMPTS]
        t0 = time.perf_counter()
        reqs, owners = [], []
        for i, (messages, label) in enumerate(batch):
            ids = policy.encode(policy.render_chat(messages))
            for k in range(SAMPLES):
                reqs.append(GenRequest(ids, MAX_TOKENS, 1.0, 1.0, [], 1000 * step + 10 * i + k))
                owners.append((i, ids, label))
        results = policy.generate(reqs)
        t1 = time.perf_counter()
        samples = [Sample(f"p{i}", ids, r.token_ids, r.logprobs, reward(r.text, label), r.text.strip()[:12])
                   for (i, ids, label), r in zip(owners, results) if r.token_ids]
        groups = trainer.usable_groups(samples)
        trainer._step(groups or {s.group: [s] for s in samples}, sorted(groups or {s.group for s in samples}), None)
        t2 = time.perf_counter()
        if step:
            gen_s.append(t1 - t0)
            train_s.append(t2 - t1)
    return gen_s, train_s


def bench_trl(data, steps: int) -> list[float]:
    import datasets
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from sia.policy.embedded import embedded_model_dir

    path = str(embedded_model_dir())
    ds = datasets.Dataset.from_list([{"prompt": m, "label": lab} for m, lab in data])

    def reward_fn(completions, label, **_):
        return [reward(c[0]["content"] if isinstance(c, list) else c, lab) for c, lab in zip(completions, label)]

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    cfg = GRPOConfig(output_dir="/tmp/sia-bench-trl", per_device_train_batch_size=PROMPTS * SAMPLES, num_generations=SAMPLES,
                     max_completion_length=MAX_TOKENS, learning_rate=LR, max_steps=steps + 1, bf16=False, fp16=False,
                     gradient_checkpointing=False, use_cpu=True, report_to=[], save_strategy="no", logging_steps=1, beta=0.0,
                     temperature=1.0, seed=0, dataloader_num_workers=0)
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), reward_funcs=reward_fn, args=cfg, train_dataset=ds,
                          processing_class=AutoTokenizer.from_pretrained(path),
                          peft_config=LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
                          callbacks=[Timer()])
    trainer.train()
    return times[1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    data = prompts()
    gen_s, train_s = bench_sia(data, args.steps)
    sia_step = [g + t for g, t in zip(gen_s, train_s)]
    print(f"{'':28s} {'s/step (median)':>16s}")
    print(f"{'sia: generation (policy)':28s} {statistics.median(gen_s):16.2f}")
    print(f"{'sia: update (Trainer)':28s} {statistics.median(train_s):16.2f}")
    print(f"{'sia: total':28s} {statistics.median(sia_step):16.2f}")
    try:
        import trl  # noqa: F401
    except ImportError:
        print("TRL is not installed (run `make bench`); no comparison made")
        return
    trl_s = bench_trl(data, args.steps)
    print(f"{'TRL GRPOTrainer (with gen.)':28s} {statistics.median(trl_s):16.2f}")
    print(f"\nTRL / sia time per step: {statistics.median(trl_s) / statistics.median(sia_step):.2f}x "
          f"({PROMPTS} prompts x {SAMPLES} samples, <= {MAX_TOKENS} completion tokens, LoRA r=16 q,v)")


if __name__ == "__main__":
    main()
