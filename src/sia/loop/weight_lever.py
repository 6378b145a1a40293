"""The weight lever: collect through the champion harness, train a LoRA adapter, serve it.

A `WeightUpdate` runs `rounds` rounds of collect-then-train, then registers:

1. Collect. The champion harness runs `samples` rollouts on each of `examples`
   train examples (seeded by run seed, generation and round), as an ordinary
   evaluation in the store. The policy service samples those rollouts'
   generations at `temperature` (see `PolicyService.explore`), so the harness
   is unchanged and every model call is recorded with token ids and logprobs.
   A ce update's first round counts the champion's train analysis among its
   examples (the same harness and adapter built those prompts already).
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

Distillation (data "distill", ce): the champion runs once on the round's
examples as it always does, and its answers become the targets; the prompts
come from a cheaper student harness (the proposal's `harness`) run on the same
examples, so the adapter learns to give the champion's answers without its
extra calls. The candidate is (student harness, new adapter), and the gate
judges it for non-inferiority and fewer model calls per example.

A kill during training restarts that generation's training (a new attempt:
the intermediate adapters were not kept; the rollouts already recorded stay in
the store); a complete adapter folder is registered without retraining.
"""

from __future__ import annotations

import json
import random
import shutil
import time

from sia.agents.proposal import WeightUpdate
from sia.loop.lever_context import Challenger, LeverContext
from sia.weights.config import plan
from sia.weights.samples import gold_samples, samples_from_store


class WeightLever:
    """A new adapter version under the champion's harness, trained on the champion's own rollouts."""

    name = "weights"
    proposal_type = WeightUpdate

    def challenger(self, ctx: LeverContext, gen: int, champion: str, proposal: WeightUpdate) -> Challenger:
        from sia.errors import SiaError

        try:
            harness_version = self._student(ctx, champion, proposal)
            version, info = self._train(ctx, gen, champion, proposal, harness_version)
        except SiaError as e:
            return Challenger(None, refused=f"weight update refused: {e.message}")
        if version is None:
            return Challenger(None, refused=info)
        cid = ctx.store.add_candidate(harness_version, version, proposal.lever, f"{proposal.rationale} | {info}", parent=champion)
        return Challenger(cid, note=info, cheaper=proposal.data == "distill")

    @staticmethod
    def _student(ctx: LeverContext, champion: str, proposal: WeightUpdate) -> str:
        """The harness version the adapter is trained under: the champion's, or for a distillation the student's."""
        from sia.errors import SiaError

        cand = ctx.store.candidate(champion)
        if proposal.data != "distill":
            return cand.harness_version
        if not proposal.harness:
            raise SiaError("a distillation needs the student harness", "put its source in the proposal's harness field")
        refused = ctx.refusal(proposal.harness)
        if refused:
            raise SiaError(f"the student harness is invalid: {refused}", "fix the student harness")
        return ctx.store.add_harness_version(proposal.harness, f"distillation student: {proposal.rationale}", parent=cand.harness_version)

    def _train(self, ctx: LeverContext, gen: int, champion: str, proposal: WeightUpdate, harness_version: str
               ) -> tuple[str | None, str]:
        """Collect and train in rounds, then register and serve the new adapter; returns (version or None, what happened)."""
        from sia.weights.trainer import Trainer

        store, task, runtime = ctx.store, ctx.task, ctx.runtime
        wp = plan(proposal.algorithm, proposal.config, proposal.data)
        if "seed" not in proposal.config:  # the run's seed and the generation pick the LoRA initialisation and the order
            wp = wp.model_copy(update={"train": wp.train.model_copy(update={"seed": update_seed(ctx.seed, gen)})})
        policy = runtime.local_policy()  # fails clearly when the policy is a remote endpoint
        parent = store.candidate(champion).adapter_version
        version = f"a{gen}"  # one adapter version per generation at most, so a resumed generation finds its own
        path = store.adapters_dir() / version
        if store.adapter_version(version) is None and not (path / "adapter_config.json").is_file():
            attempt = int(store.get_meta(f"gen:{gen}:train_attempts", 0)) + 1  # a killed attempt's intermediate adapters are gone
            store.set_meta(f"gen:{gen}:train_attempts", attempt)
            ctx.serve_adapter(parent)
            trainer = Trainer(policy.model_path, wp.train, pad_id=policy.pad_id,
                              init_adapter=store.adapter_path(parent) if parent else None)
            ctx.observer.on_phase(f"generation {gen}: training {version} by {wp.train.algorithm} from {parent or 'the base model'}: "
                                     f"{wp.rounds} round(s) of {wp.samples} samples on {wp.examples} train examples, "
                                     + (f"at most {wp.most_steps()} step(s), until the loss on a held-out "
                                        f"{wp.train.heldout:.0%} stops improving" if wp.train.heldout > 0
                                        else f"{wp.most_steps()} step(s) each"))
            ctx.observer.on_train_start(wp.rounds * wp.most_steps())
            rng = random.Random(f"{ctx.seed}:{gen}:collect")
            pool = task.split("train")
            behaviour, collected, taken = parent, [], 0
            label_set, grade, collector = {}, _grader(task), champion
            if proposal.data == "distill":  # the student harness on the parent adapter collects the prompts
                collector = store.add_candidate(harness_version, parent, "weights", "distillation student before training",
                                                parent=champion)
            if wp.train.algorithm == "ce":  # a generating harness's prompts, each with the task's label set
                label_set = ce_label_set(task, pool, policy.encode, policy.tokenizer.eos_token_id,
                                         store.harness_source(harness_version))
            gate_s = ctx.run.fresh_seconds_of(champion, "val")[0]  # the gate's worst case: one validation pass of the champion
            for r in range(wp.rounds):
                started = time.monotonic()
                reused, have = self._analysed(ctx, champion, wp) if r == 0 and proposal.data != "distill" else (None, set())
                examples = rng.sample([e for e in pool if e.id not in have], max(0, min(wp.examples, len(pool)) - len(have)))
                if proposal.data == "distill":  # the champion answers as it always does; the student learns those answers
                    grade = self._teacher(ctx, gen, attempt, champion, examples, parent)
                samples = samples_from_store(store, reused, grade=grade, **label_set) if reused else []
                collected += [reused] if reused else []
                if examples:
                    eid = ctx.collect(collector, f"collect:{gen}:{attempt}:{r}", examples, f"collect round {r + 1}/{wp.rounds}",
                                      samples=wp.samples, seed=ctx.seed + gen, model=behaviour, temperature=wp.temperature)
                    collected.append(eid)
                    samples += (gold_samples(store, eid, gold_answers(task, examples), policy.encode, [policy.tokenizer.eos_token_id])
                                if proposal.data == "gold" else samples_from_store(store, eid, grade=grade, **label_set))
                if wp.train.heldout > 0:
                    taken += until_heldout_stops(trainer, samples, wp, rng, ctx, gate_s)
                    break
                taken += trainer.round(samples, wp.train.steps, on_step=ctx.observer.on_train_step,
                                       time_left=lambda: ctx.seconds_left() - gate_s)  # keep the time to gate what was trained
                if trainer.halted:
                    break
                if r + 1 == wp.rounds:
                    break
                if ctx.seconds_left() < (time.monotonic() - started) + gate_s:
                    ctx.observer.on_phase(f"generation {gen}: {r + 1} of {wp.rounds} rounds: another would leave no time to gate")
                    break
                step_name = f"{version}-t{attempt}r{r + 1}"  # serve the adapter as trained so far: the next round is on-policy
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
                       "harness_version": harness_version, "base_model": str(policy.model_path),
                       "rounds": wp.rounds, "examples_per_round": wp.examples, "samples": wp.samples, "temperature": wp.temperature}
            trainer.save(path, lineage, canary=samples)
        if store.adapter_version(version) is None:
            store.add_adapter_version(version, parent, wp.train.algorithm, {"config": proposal.config, "generation": gen})
        ctx.serve_adapter(version)
        return version, _training_summary(store, version)

    @staticmethod
    def _analysed(ctx: LeverContext, champion: str, wp) -> tuple[str | None, set[str]]:
        """The champion's train analysis, when its rollouts are what this update would collect anyway: ce takes only the
        prompts the harness builds (no sampled replies), one rollout per example, and the analysis ran the same harness on
        the same adapter. Its examples then count towards the round's (sentiment: 48 of 128, 20 s of a 47-s collection).
        Returns the evaluation and its example ids, or (None, empty set)."""
        eid = ctx.store.evaluation_id(champion, "train") if wp.train.algorithm == "ce" and wp.samples == 1 else None
        ids = {r.example_id for r in ctx.store.rollouts(eid)} if eid else set()
        return (eid, ids) if eid and len(ids) <= wp.examples else (None, set())

    @staticmethod
    def _teacher(ctx: LeverContext, gen: int, attempt: int, champion: str, examples, parent: str | None):
        """The champion's own answers on `examples`, as the reward of each label."""
        eid = ctx.collect(champion, f"teacher:{gen}:{attempt}", examples, "distill: the champion's answers", samples=1,
                          seed=ctx.seed + gen, model=parent)
        answers = {r.example_id: r.output for r in ctx.store.rollouts(eid) if not r.error_type}

        def grade(example_id: str, answer: str) -> float:
            return float(example_id in answers and answer == answers[example_id])
        return grade


def update_seed(run_seed: int, generation: int) -> int:
    """The seed of generation `generation`'s weight update in a run seeded `run_seed`: runs with other seeds start their
    adapters from other random LoRA weights and take their groups in another order (three seeds of an ablation are
    three samples of training, not one)."""
    return run_seed * 1000 + generation


def gold_answers(task, examples) -> dict[str, str]:
    """Each example's gold answer, as the task's grader declares it (the output that scores full marks)."""
    from sia.errors import SiaError

    gold = getattr(getattr(task.grader, "func", task.grader), "gold", None)
    if gold is None:
        raise SiaError(f"the grader of {task.name!r} declares no gold answer", "train on the grader's rewards (data train)")
    return {e.id: str(gold(e)) for e in examples}


def until_heldout_stops(trainer, samples, wp, rng, ctx, gate_s: float) -> int:
    """Train on all but a held-out share of `samples` until the held-out loss, read every quarter pass, has not improved
    twice, the plan's steps are spent or the budget (less a gate) holds no more; keep the best reading's weights. The
    update's length is then the task's own: its loss curve, not a constant step count. Returns the steps taken."""
    groups = sorted({s.group for s in samples})  # a group (a ce label set, a prompt's samples) is held out whole
    rng.shuffle(groups)
    out = set(groups[:max(1, round(len(groups) * wp.train.heldout))])
    held, fit = [s for s in samples if s.group in out], [s for s in samples if s.group not in out]
    every = max(1, (len(groups) - len(out)) // (4 * wp.train.prompts_per_step))
    most = wp.train.steps_for(len(groups) - len(out))  # ce: the passes the plan asks for over what is trained on; else `steps`
    best = trainer.heldout_loss(held)
    if best is None or not fit:
        return 0
    kept, worse, taken = trainer.snapshot(), 0, 0
    trainer.heldout_log.append({"steps": 0, "heldout_loss": best})
    ctx.observer.on_phase(f"training on {len(groups) - len(out)} examples; held-out loss {best:.4f} on {len(out)}, "
                          f"read every {every} steps")
    while taken < most and worse < 2:
        steps = trainer.round(fit, min(every, most - taken), on_step=ctx.observer.on_train_step,
                              time_left=lambda: ctx.seconds_left() - gate_s)
        taken += steps
        loss = trainer.heldout_loss(held)
        trainer.heldout_log.append({"steps": taken, "heldout_loss": loss})
        if loss is not None and loss < best - 1e-4:
            best, kept, worse = loss, trainer.snapshot(), 0
        else:
            worse += 1
        if steps == 0 or trainer.halted:
            break
    trainer.restore(kept)
    trainer.stopped = trainer.stopped or (f"held-out loss stopped improving at {best:.4f} after {taken} steps" if worse >= 2
                                          else f"{taken} steps; held-out loss {best:.4f}")
    return taken


def ce_label_set(task, examples, encode, eos_id: int, harness_source: str) -> dict:
    """The keywords `samples_from_store` takes to turn a harness's recorded calls on `examples` into ce label groups."""
    return {"labels": task.labels, "encode": encode, "end_ids": [eos_id], "aliases": _label_words(harness_source),
            "inputs": {e.id: str(e.inputs.get(task.spec.input_field, "")) for e in examples}}


def _label_words(source: str) -> dict[str, str]:
    """Scored word -> label, for a template harness that scores other words than the label names."""
    from sia.harness.template import read_config

    cfg = read_config(source)
    return {word: label for label, word in cfg.label_words.items()} if cfg is not None else {}


def _grader(task):
    def grade(example_id: str, answer: str) -> float:
        return task.grade(task.examples[example_id], answer).score
    return grade


def _training_summary(store, version: str) -> str:
    meta = json.loads((store.adapter_path(version) / "sia_training.json").read_text())
    log = meta.get("log") or []
    if not log:
        return f"{version}: no training steps"
    first, last = log[0], log[-1]
    stop = f"; stopped early: {meta['stopped_early']}" if meta.get("stopped_early") else ""
    if meta.get("heldout"):
        stop += f"; held-out loss {meta['heldout'][0]['heldout_loss']:.3f} -> " + " -> ".join(
            f"{h['heldout_loss']:.3f}" for h in meta["heldout"][-3:] if h["heldout_loss"] is not None)
    return (f"{version} trained {len(log)} steps on {meta.get('groups_used')} groups: reward {first['reward_mean']:.2f}, "
            f"loss {first['loss']:+.3f} -> {last['loss']:+.3f}, preferred answers now {last.get('predicted')}{stop}")
