"""Seconds per ce step for four ways of batching its prompts, side by side in one run.

`shared_prompt_logprobs` runs the tokens a batch's prompts open with in common (chat markup, system prompt,
instruction) once and repeats their keys and values over the batch, and cuts the batch by length so that short prompts
are not padded to the longest (`_by_length`). This bench trains one LoRA adapter per way of batching (see `MODES`), from
the same seed on the same label groups, one step of each in turn (so a slow moment of the machine hits them all), and
prints seconds per step, the token positions each step runs through the model (padding and label candidates included),
and the largest difference in loss between them (they compute the same function, so it stays at float rounding).

The label groups are what a ce update trains on for the task's plain prompt (its instruction, a blank line, the
input, as the user turn of the chat template): one group per train example, its labels as the candidates, the gold
one rewarded. The first step of each is a warm-up and is not counted.

    python bench/shared_prefix.py [--task sentiment] [--steps 4] [--prompts 16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODES = {"one": (10**9, 10**9), "opening": (1, 10**9), "length": (10**9, 48), "both": (1, 48)}
"""(`SHARED_OPENING_MIN`, `SUBBATCH_POSITIONS`) of each way of batching a step's prompts: one left-padded batch; the
shared opening run once; batches cut by length (`_by_length`); both (the trainer's default)."""


def label_groups(task_name: str, n: int):
    """`n` train examples of the task as ce label groups on its plain prompt, and the tokenizer's pad id."""
    from transformers import AutoTokenizer

    from sia.policy.embedded import resolve_model_path
    from sia.task.loading import load_task
    from sia.weights.samples import Sample

    task, base = load_task(task_name), resolve_model_path(None)
    tok = AutoTokenizer.from_pretrained(str(base))
    info = task.public_info()
    samples = []
    for ex in task.split("train")[:n]:
        text = str(ex.inputs.get(task.spec.input_field, ""))
        prompt = tok.apply_chat_template([{"role": "user", "content": info["instruction"] + "\n\n" + text}],
                                         add_generation_prompt=True, tokenize=False)
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        for label in task.labels:
            samples.append(Sample(ex.id, ids, tok(label, add_special_tokens=False)["input_ids"] + [tok.eos_token_id], [],
                                  float(task.grade(ex, label).score), label, absolute=True))
    return base, tok.pad_token_id or 0, samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="sentiment")
    ap.add_argument("--steps", type=int, default=4, help="timed steps of each (after one warm-up step)")
    ap.add_argument("--prompts", type=int, default=16, help="prompts a step (the builtin agent's ce preset: 16)")
    args = ap.parse_args()
    import sia.agents.costs as costs
    import sia.weights.grpo as grpo
    from sia.weights.config import TrainConfig
    from sia.weights.trainer import Trainer

    def gflops() -> float:  # the cost model's speed probe, measured now
        costs._probe = None
        return costs.REFERENCE_GFLOPS / costs.machine_slowdown()

    before = gflops()
    base, pad, samples = label_groups(args.task, args.prompts * (args.steps + 1))
    prompts = sorted({tuple(s.prompt_ids) for s in samples})
    config = TrainConfig(algorithm="ce", prompts_per_step=args.prompts, steps=args.steps + 1, epochs=0)
    trainers = {mode: Trainer(base, config, pad_id=pad) for mode in MODES}
    positions: dict[str, list[int]] = {mode: [] for mode in MODES}  # token positions run through the model, padding included
    for mode, trainer in trainers.items():
        trainer.model.get_input_embeddings().register_forward_hook(lambda m, i, o, mode=mode: positions[mode].append(i[0].numel()))
    chunks = [prompts[k: k + 16] for k in range(0, len(prompts), 16)]
    opening = statistics.mean(grpo.shared_opening(c) for c in chunks)
    groups = {}
    for s in samples:
        groups.setdefault(s.group, []).append(s)
    order = sorted(groups)
    seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    run: dict[str, list[int]] = {mode: [] for mode in MODES}
    gap = 0.0
    labels = len({s.output for s in samples})
    print(f"{args.task}: {len(order)} label groups of {labels} labels, prompts of "
          f"{min(map(len, prompts))}-{max(map(len, prompts))} tokens, {opening:.0f} shared by each batch of 16", flush=True)
    for step in range(args.steps + 1):
        chosen = order[step * args.prompts: (step + 1) * args.prompts]
        losses = {}
        for mode, trainer in trainers.items():
            grpo.SHARED_OPENING_MIN, grpo.SUBBATCH_POSITIONS = MODES[mode]
            positions[mode].clear()
            t0 = time.perf_counter()
            trainer._step(groups, chosen, None)
            if step:
                seconds[mode].append(time.perf_counter() - t0)
                run[mode].append(sum(positions[mode]))
            losses[mode] = trainer.log[-1]["loss"]
        gap = max(gap, max(losses.values()) - min(losses.values()))
        print(f"  step {step}{' (warm-up)' if not step else ''}: " +
              ", ".join(f"{m} {trainers[m].log[-1]['seconds']:.1f} s" for m in trainers), flush=True)
    grpo.SHARED_OPENING_MIN, grpo.SUBBATCH_POSITIONS = MODES["both"]
    print(f"\n{'batching':10s}{'s/step':>9s}{'positions/step':>16s}{'speed-up':>10s}")
    first = statistics.median(seconds["one"])
    for mode in MODES:
        t = statistics.median(seconds[mode])
        print(f"{mode:10s}{t:9.1f}{statistics.mean(run[mode]):16.0f}{first / t:9.2f}x")
    print(f"\nlargest loss difference between them {gap:.1e} over {args.steps + 1} steps; the speed probe read "
          f"{before:.0f} GFLOP/s before and {gflops():.0f} after (the cost model's reference: {costs.REFERENCE_GFLOPS:.0f})")


if __name__ == "__main__":
    main()
