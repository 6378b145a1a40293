"""ce settings compared offline, on the prompts one finished run collected: training seconds against validation accuracy.

A run of `bench/weights_on_champion.py` keeps what its ce update trained on (the champion harness's recorded prompts on
128 train examples, each with the task's label set) and the same harness's validation rollouts. This bench trains one
adapter per variant of the ce settings on exactly those prompts, then scores each adapter on the validation label groups
as the harness chooses (the highest scored label, less its content-free score on a calibrating harness), on HF/PyTorch.
A variant costs its training and one validation pass (5-15 minutes on LawBench here) instead of a whole run. The gate
serves adapters on llama.cpp, so the accuracies printed here are HF's and may differ from a gate's by a few points.

    python bench/ce_variants.py --run bench/results/weights-on-champion/lawbench-topics-seed0 preset lora_layers=10 negatives=7

A variant is `preset` (LABEL_PRESET with the run's settings) or comma-separated KEY=VALUE settings on top of it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _groups(samples) -> dict[str, list]:
    out: dict[str, list] = {}
    for s in samples:
        out.setdefault(s.group, []).append(s)
    return out


def accuracy(trainer, samples) -> float:
    """Share of label groups whose best-rewarded candidate is the one the adapter scores highest (calibrated)."""
    import torch

    groups, right = _groups(samples), 0
    with torch.no_grad():
        for ss in groups.values():
            seq = trainer._pair_scores([(s.prompt_ids, s.completion_ids) for s in ss])
            bias = trainer._bias(ss)
            if bias is not None:
                seq = seq - bias
            right += ss[int(seq.argmax())].reward >= max(s.reward for s in ss)
    return right / max(1, len(groups))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished weights_on_champion run directory")
    ap.add_argument("variants", nargs="+", help="preset, or KEY=VALUE[,KEY=VALUE...] on top of it")
    ap.add_argument("--out", type=Path, default=None, help="write the table as JSON here")
    args = ap.parse_args()
    from rich.progress import Progress
    from transformers import AutoTokenizer

    from sia.loop.weight_lever import _grader, ce_label_set
    from sia.policy.embedded import resolve_model_path
    from sia.store.store import Store
    from sia.task.loading import load_task
    from sia.weights.config import LABEL_PRESET, plan
    from sia.weights.samples import samples_from_store
    from sia.weights.trainer import Trainer

    summary = args.run.with_suffix(".json")
    if not summary.is_file():
        raise SystemExit(f"{summary} is missing: --run takes a run directory that bench/weights_on_champion.py finished")
    result = json.loads(summary.read_text())
    task, base = load_task(result["task"]), resolve_model_path(None)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    with Store(args.run, write=False) as store:
        collect = next((e for e in store.evaluations() if ":collect:" in e.config.get("purpose", "")), None)
        if collect is None:
            raise SystemExit(f"{args.run}: no weight update collected prompts in this run")
        val = next(e.id for e in store.evaluations() if e.candidate_id == collect.candidate_id and e.split == "val")
        source = store.harness_source(store.candidate(collect.candidate_id).harness_version)

        def samples(eid: str, split: str):
            encode = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
            return samples_from_store(store, eid, grade=_grader(task),
                                      **ce_label_set(task, task.split(split), encode, tokenizer.eos_token_id, source))

        train_samples, val_samples = samples(collect.id, "train"), samples(val, "val")
    print(f"{args.run.name}: {len(_groups(train_samples))} collected train groups, {len(_groups(val_samples))} validation groups")
    rows = []
    for variant in args.variants:
        extra = {} if variant == "preset" else {k: json.loads(v) for k, v in (x.split("=", 1) for x in variant.split(","))}
        wp = plan("ce", {**LABEL_PRESET, **result["settings"], **extra})
        trainer = Trainer(base, wp.train, pad_id=tokenizer.pad_token_id or 0)
        steps = wp.train.steps_for(len(trainer.usable_groups(train_samples)))
        t0 = time.monotonic()
        with Progress(transient=True) as progress:
            bar = progress.add_task(f"{variant}: training", total=steps)
            trainer.round(train_samples, steps, on_step=lambda e: progress.advance(bar))
        train_s = time.monotonic() - t0
        acc = accuracy(trainer, val_samples)
        rows.append({"variant": variant, "steps": len(trainer.log), "train_s": round(train_s, 1),
                     "s_per_step": round(train_s / max(1, len(trainer.log)), 1), "val_accuracy": acc})
        print(f"  {variant}: {len(trainer.log)} steps in {train_s:.0f} s ({rows[-1]['s_per_step']} s/step), validation {acc:.3f}",
              flush=True)
    print(f"\n{'variant':28s}{'steps':>6s}{'train s':>9s}{'s/step':>8s}{'val':>7s}")
    for r in rows:
        print(f"{r['variant']:28s}{r['steps']:6d}{r['train_s']:9.0f}{r['s_per_step']:8.1f}{r['val_accuracy']:7.3f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"run": str(args.run), "validation_n": len(_groups(val_samples)), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
