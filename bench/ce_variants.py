"""ce settings compared offline, on the prompts one finished run collected: training seconds against validation accuracy.

A run's ce adapter records what it trained on (`sia_training.json`: its settings and the evaluations it collected from,
the champion harness's recorded prompts on train examples, each with the task's label set), and the run keeps the same
champion's validation rollouts. This bench trains one adapter per variant of those settings on exactly those prompts,
then scores each adapter on the validation label groups as the harness chooses (the highest scored label, less its
content-free score on a calibrating harness), on HF/PyTorch. A variant costs its training and one validation pass (2-15
minutes here) instead of a whole run. The gate serves adapters on llama.cpp, so the accuracies printed here are HF's and
may differ from a gate's by a few points.

    python bench/ce_variants.py --run bench/results/weights-on-champion/unrecorded/lawbench-topics-seed0 preset lora_layers=10 negatives=7
    python bench/ce_variants.py --run <a sia run directory> --adapter a5 calibration_inputs=0 preset

A variant is `preset` (the adapter's own settings) or comma-separated KEY=VALUE settings on top of them. The run is any
run directory (`sia run`, `bench/ablation.py`, `bench/weights_on_champion.py`) with an adapter trained by ce.
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


def accuracy(trainer, samples, batch: int = 16) -> float:
    """Share of label groups whose best-rewarded candidate is the one the adapter scores highest (calibrated), `batch`
    groups a forward pass; a content-free prompt that many groups share is scored once."""
    import torch

    groups, right, free = list(_groups(samples).values()), 0, {}
    with torch.no_grad():
        for i in range(0, len(groups), batch):
            chunk = groups[i: i + batch]
            rows = [s for ss in chunk for s in ss]
            seq = trainer._pair_scores([(s.prompt_ids, s.completion_ids) for s in rows])
            missing = sorted({p for s in rows for p in s.bias} - set(free))
            free.update(zip(missing, trainer._pair_scores(missing)) if missing else [])
            seq = seq - torch.stack([torch.stack([free[p] for p in s.bias]).mean() if s.bias else torch.zeros(()) for s in rows])
            at = 0
            for ss in chunk:
                right += ss[int(seq[at: at + len(ss)].argmax())].reward >= max(s.reward for s in ss)
                at += len(ss)
    return right / max(1, len(groups))


def ce_adapter(run: Path, version: str | None) -> tuple[str, dict]:
    """The adapter `version` of `run` (default: its first trained by ce) and its `sia_training.json`."""
    found = sorted(run.glob("adapters/*/sia_training.json"))
    for path in found:
        meta = json.loads(path.read_text())
        if (version is None or path.parent.name == version) and meta["config"].get("algorithm") == "ce" \
                and meta.get("lineage", {}).get("collected_from"):
            return path.parent.name, meta
    raise SystemExit(f"{run}: no adapter {version or ''} trained by ce with a record of what it collected "
                     f"(found: {', '.join(p.parent.name for p in found) or 'none'})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished run directory with an adapter trained by ce")
    ap.add_argument("--adapter", default=None, help="the adapter whose training to vary (default: the run's first ce adapter)")
    ap.add_argument("variants", nargs="+", help="preset, or KEY=VALUE[,KEY=VALUE...] on top of it")
    ap.add_argument("--out", type=Path, default=None, help="write the table as JSON here")
    args = ap.parse_args()
    from rich.progress import Progress
    from transformers import AutoTokenizer

    from sia.loop.weight_lever import _grader, ce_label_set
    from sia.policy.embedded import resolve_model_path
    from sia.store.store import Store
    from sia.task.loading import load_task
    from sia.weights.config import TrainConfig
    from sia.weights.samples import samples_from_store
    from sia.weights.trainer import Trainer

    summary = next((p for p in (args.run / "summary.json", args.run.with_suffix(".json")) if p.is_file()), None)
    if summary is None:
        raise SystemExit(f"{args.run}: no summary.json: --run takes a finished run directory")
    version, meta = ce_adapter(args.run, args.adapter)
    lineage, trained = meta["lineage"], meta["config"]
    task, base = load_task(json.loads(summary.read_text())["task"]), resolve_model_path(None)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    with Store(args.run, write=False) as store:
        val = next((e.id for e in store.evaluations() if e.candidate_id == lineage["champion"] and e.split == "val"), None)
        if val is None:
            raise SystemExit(f"{args.run}: champion {lineage['champion']} of {version} has no validation rollouts")
        source = store.harness_source(lineage["harness_version"])

        def samples(eid: str, split: str):
            encode = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
            return samples_from_store(store, eid, grade=_grader(task),
                                      **ce_label_set(task, task.split(split), encode, tokenizer.eos_token_id, source))

        train_samples = [s for eid in lineage["collected_from"] for s in samples(eid, "train")]
        val_samples = samples(val, "val")
    print(f"{args.run.name} {version}: {len(_groups(train_samples))} collected train groups, {len(_groups(val_samples))} validation groups")
    rows = []
    for variant in args.variants:
        extra = {} if variant == "preset" else {k: json.loads(v) for k, v in (x.split("=", 1) for x in variant.split(","))}
        config = TrainConfig.model_validate({**trained, **extra})
        trainer = Trainer(base, config, pad_id=tokenizer.pad_token_id or 0)
        steps = config.steps_for(len(trainer.usable_groups(train_samples)))
        t0 = time.monotonic()
        with Progress(transient=True) as progress:
            bar = progress.add_task(f"{variant}: training", total=steps)
            trainer.round(train_samples, steps, on_step=lambda e, bar=bar: progress.advance(bar))
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
        args.out.write_text(
            json.dumps({"run": str(args.run), "adapter": version, "validation_n": len(_groups(val_samples)), "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
