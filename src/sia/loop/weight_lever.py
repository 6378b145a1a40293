"""The weight lever inside the loop: collect through the champion harness, train a LoRA adapter, serve it.

A `WeightUpdate` runs `rounds` rounds of collect-then-train, then registers:

1. Collect. The champion harness runs `samples` rollouts on each of `examples`
   train examples (seeded by run seed, generation and round), as an ordinary
   evaluation in the store. The policy service samples those rollouts'
   generations at `temperature` (see `PolicyService.explore`), so the harness
   is unchanged and every model call is recorded with token ids and logprobs.
   Round 1 runs on the champion's adapter; later rounds on the adapter as
   trained so far, saved and served under an intermediate name, so the data
   stays on-policy (collecting once and reusing it leaves the clipped ratio
   unable to move the answer tokens far: measured here, 15 steps on one
   collection did not change a single greedy sentiment answer).
2. Train. `sia.weights.samples` turns the recorded calls into groups and the
   `sia.weights.trainer.Trainer` (model and optimiser kept across rounds) trains from
   the champion's adapter, or a fresh LoRA on the base, for `steps` steps.
   The result goes to `RUN_DIR/adapters/a<generation>.tmp`, renamed when complete.
3. Register and serve. The version is recorded with its parent, algorithm,
   config and training log, and the policy service loads it by name next to
   the champion; the loop then gates (champion harness, aN) like any change.

A kill during training restarts that generation's training (a new attempt:
the intermediate adapters were not kept; the rollouts already recorded stay in
the store); a complete adapter folder is registered without retraining.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

from sia.errors import SiaError
from sia.weights.grpo import GRPOConfig
from sia.agents.proposal import WeightUpdate
from sia.weights.samples import samples_from_store
from sia.weights.trainer import TrainConfig

if TYPE_CHECKING:
    from sia.loop.loop import Loop

DATA_SOURCES = ("train",)


@dataclass(frozen=True)
class WeightPlan:
    rounds: int = 1
    """Collect-then-train rounds; each round collects with the adapter as trained so far."""
    examples: int = 32
    """Train examples to collect rollouts on, per round."""
    samples: int = 8
    """Rollouts per example (the GRPO group size)."""
    temperature: float = 1.0
    """Sampling temperature of the collection rollouts' generations."""
    train: TrainConfig = field(default_factory=TrainConfig)


def plan(proposal: WeightUpdate) -> WeightPlan:
    """Validate a proposal's algorithm, config and data, with a clear error for anything unknown."""
    if proposal.algorithm not in ("grpo", "sft"):
        raise SiaError(f"unknown training algorithm {proposal.algorithm!r}", "use grpo or sft")
    if proposal.data not in DATA_SOURCES:
        raise SiaError(f"unknown training data {proposal.data!r}", f"use one of {', '.join(DATA_SOURCES)}")
    cfg = dict(proposal.config or {})
    plan_keys = {f.name for f in fields(WeightPlan)} - {"train"}
    train_keys = {f.name for f in fields(TrainConfig)} - {"algorithm", "grpo"}
    grpo_keys = {f.name for f in fields(GRPOConfig)}
    unknown = sorted(set(cfg) - plan_keys - train_keys - grpo_keys)
    if unknown:
        raise SiaError(f"unknown weight-update setting(s) {', '.join(unknown)}",
                       f"use {', '.join(sorted(plan_keys | train_keys | grpo_keys))}")
    try:
        grpo = GRPOConfig(**{k: v for k, v in cfg.items() if k in grpo_keys})
        tc = TrainConfig(algorithm=proposal.algorithm, grpo=grpo, **{k: v for k, v in cfg.items() if k in train_keys})
        wp = WeightPlan(train=tc, **{k: v for k, v in cfg.items() if k in plan_keys})
        checks = [(int(wp.examples) >= 1, "examples >= 1"), (int(wp.samples) >= 1, "samples >= 1"),
                  (0 < float(wp.temperature) <= 2, "0 < temperature <= 2"), (0 < float(tc.lr) < 1, "0 < lr < 1"),
                  (1 <= int(tc.steps) <= 1000, "1 <= steps <= 1000"), (1 <= int(tc.rank) <= 256, "1 <= rank <= 256"),
                  (int(tc.prompts_per_step) >= 1, "prompts_per_step >= 1"),
                  (0 < float(grpo.token_fraction) <= 1, "0 < token_fraction <= 1"),
                  (grpo.token_selection in ("none", "entropy", "gmts"), "token_selection none|entropy|gmts"),
                  (grpo.aggregation in ("token", "sequence", "constant"), "aggregation token|sequence|constant")]
    except (TypeError, ValueError) as e:
        raise SiaError(f"bad weight-update setting: {e}", "numbers must be numbers") from None
    bad = [what for ok, what in checks if not ok]
    if bad:
        raise SiaError(f"weight-update settings out of range: need {', '.join(bad)}", "fix the proposal's config")
    return wp


def run_weight_update(loop: "Loop", gen: int, champion: str, proposal: WeightUpdate) -> tuple[str | None, str]:
    """Collect and train in rounds, then register and serve the new adapter; returns (version or None, what happened)."""
    from sia.weights.trainer import Trainer

    store, task, runtime = loop.store, loop.task, loop.runtime
    wp = plan(proposal)
    policy = runtime.local_policy()  # fails clearly when the policy is a remote endpoint
    cand = store.candidate(champion)
    parent = cand["adapter_version"]
    version = f"a{gen}"  # one adapter version per generation at most, so a resumed generation finds its own
    path = store.adapters_dir() / version
    if store.adapter_version(version) is None and not (path / "adapter_config.json").is_file():
        attempt = int(store.get_meta(f"gen:{gen}:train_attempts", 0)) + 1  # a killed attempt's intermediate adapters are gone
        store.set_meta(f"gen:{gen}:train_attempts", attempt)
        loop.ensure_adapter(parent)
        trainer = Trainer(policy.model_path, wp.train, pad_id=policy.pad_id, init_adapter=store.adapter_path(parent) if parent else None)
        loop.ui("phase", text=f"generation {gen}: training {version} by {wp.train.algorithm} from {parent or 'the base model'}: "
                              f"{wp.rounds} round(s) of {wp.samples} samples on {wp.examples} train examples, {wp.train.steps} step(s) each")
        loop.ui("train_start", steps=wp.rounds * wp.train.steps)
        rng = random.Random(f"{loop.config.seed}:{gen}:collect")
        pool = task.split("train")
        behaviour, collected, taken = parent, [], 0
        for r in range(wp.rounds):
            examples = rng.sample(pool, min(wp.examples, len(pool)))
            key = f"{champion}:collect:{gen}:{attempt}:{r}"
            eid = store.evaluation_for(key, lambda ex=examples, key=key, b=behaviour: store.add_evaluation(
                champion, "train", loop.config.seed + gen, wp.samples, len(ex),
                {"purpose": key, "temperature": wp.temperature, "model": runtime.model_name(b)}))
            runtime.service.explore(f"{eid}:", wp.temperature)
            try:
                loop._run_chunk(champion, eid, "train", examples, f"collect round {r + 1}/{wp.rounds}", samples=wp.samples,
                                seed=loop.config.seed + gen, model=behaviour)
            finally:
                runtime.service.explore(f"{eid}:", None)
            collected.append(eid)
            samples = samples_from_store(store, eid, grade=_grader(task))
            taken += trainer.round(samples, wp.train.steps, on_step=lambda e: loop.ui("train_step", **e))
            if trainer.stopped and trainer.log and "collapsed" in trainer.stopped:
                break
            if r + 1 < wp.rounds:  # serve the adapter as trained so far, so the next round's samples are on-policy
                step_name = f"{version}-t{attempt}r{r + 1}"
                trainer.save(store.adapters_dir() / ".rounds" / step_name)
                if behaviour and behaviour != parent:
                    policy.unload_adapter(behaviour)
                runtime.load_adapter(step_name, store.adapters_dir() / ".rounds" / step_name)
                behaviour = step_name
        if behaviour and behaviour != parent:
            policy.unload_adapter(behaviour)
        shutil.rmtree(store.adapters_dir() / ".rounds", ignore_errors=True)
        if taken == 0:
            return None, f"nothing to train on: {trainer.stopped}"
        lineage = {"version": version, "parent": parent, "generation": gen, "collected_from": collected, "champion": champion,
                   "harness_version": cand["harness_version"], "base_model": str(policy.model_path),
                   "rounds": wp.rounds, "examples_per_round": wp.examples, "samples": wp.samples, "temperature": wp.temperature}
        trainer.save(path, lineage)
    if store.adapter_version(version) is None:
        store.add_adapter_version(version, parent, wp.train.algorithm, {"config": proposal.config, "generation": gen})
    loop.ensure_adapter(version)
    return version, _training_summary(store, version)


def _grader(task):
    def grade(example_id: str, answer: str) -> float:
        return task.grade(task.examples[example_id], answer).score
    return grade


def _training_summary(store, version: str) -> str:
    import json

    meta = json.loads((store.adapter_path(version) / "sia_training.json").read_text())
    log = meta.get("log") or []
    if not log:
        return f"{version}: no training steps"
    first, last = log[0], log[-1]
    stop = f"; stopped early: {meta['stopped_early']}" if meta.get("stopped_early") else ""
    return (f"{version} trained {len(log)} steps on {meta.get('groups_used')} groups: reward {first['reward_mean']:.2f}, "
            f"loss {first['loss']:+.3f} -> {last['loss']:+.3f}, preferred answers now {last.get('predicted')}{stop}")

