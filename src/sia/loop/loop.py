"""The self-improvement loop: Execute, Analyse, Improve, Gate, Record, within budgets.

Every step is keyed in the run store, so a run killed at any point (SIGKILL
included) resumes where it stopped: evaluations are found by purpose and skip
the rollouts they already hold, a generation's proposal is stored before it is
acted on, and the champion history is a table. The held-out test split is
scored twice, for the baseline and for the final champion, and nothing else
ever sees it.

The loop knows no lever by type: a proposal goes to the lever its `lever`
field names (`sia.loop.levers`), which returns a challenger or a refusal, and
every challenger faces the same smoke test and sequential paired gate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import asdict, replace
from typing import Any

from sia.agents.builtin import BuiltinFeedbackAgent
from sia.agents.clients import AgentModelError
from sia.agents.contract import AgentState, FeedbackAgent
from sia.agents.costs import machine_slowdown
from sia.agents.meta import initial_harness, llm_initial_harness
from sia.agents.proposal import Invalid, Stop, from_dict, to_dict
from sia.errors import SiaError
from sia.evaluation.analysis import analyse, calls_per_example
from sia.evaluation.executor import EvalResult, InfraFailure
from sia.evaluation.stats import factorial_2x2
from sia.harness.sandbox import SandboxLimits
from sia.loop import alpha, holdout, manifest, tracking
from sia.loop.budget import Budget
from sia.loop.config import RunConfig
from sia.loop.events import Fanout, RunObserver
from sia.loop.gate import Verdict, compare, decided
from sia.loop.levers import Lever, LeverContext, available_levers
from sia.policy.runtime import PolicyRuntime
from sia.store import priors
from sia.store.memory import Memory, lesson_for
from sia.store.records import purpose_key
from sia.store.run import Run
from sia.store.summary import run_summary

Observer = RunObserver

PROBE_STRETCH = 4.0
"""Without --timeout, the throughput probe's rollouts may take this many times the task's timeout_s."""


_quiet = RunObserver()
"""The observer of a run nobody watches: every event does nothing."""


PATIENT_SHARE = 0.1
"""Generations without a gain end a run only once this share of its budget is left or less: with more, the Feedback-Agent
goes on until no option it weighs fits (a run on a numeric task stopped after 4.6 of its 15 minutes, weights untried)."""


class Loop:
    def __init__(self, run: Run, runtime: PolicyRuntime, config: RunConfig, observer: Observer = _quiet,
                 agent: FeedbackAgent | None = None, meta_model=None, levers: Mapping[str, Lever] | None = None,
                 started_at: float | None = None) -> None:
        """`agent`: the Feedback-Agent (builtin by default); `meta_model`: an AgentModel that writes the first harness;
        `levers`: the levers by name (default: every available one; `config.levers` says which the agent may pull);
        `started_at`: when the command started (time.monotonic()), so that loading the model counts against the budget."""
        self.records, self.task, self.store, self.runtime, self.config = run, run.task, run.store, runtime, config
        self.tracker = None
        if config.track:  # an experiment tracker sees every event the views see (`sia.loop.tracking`)
            self.tracker = tracking.Tracker(run, tracking.open_sink(config.track, config.track_uri, run), phase=observer.on_phase)
            observer = Fanout(observer, self.tracker)
        self.ui = observer
        self.agent = agent or BuiltinFeedbackAgent()
        self.meta_model = meta_model
        self.levers = dict(levers or available_levers())
        self.binary = self.task.spec.score == "binary"
        limits = run.store.get_meta("limits") or {}
        self.val = self.task.split("val")[: config.val_limit or limits.get("val")]
        self.test = self.task.split("test")[: config.test_limit or limits.get("test")]
        self.budget = Budget(run, config.budget, config.max_rollouts, config.max_tokens, len(self.test), started_at)
        timeout = config.timeout or limits.get("timeout") or self.task.spec.harness.timeout_s
        limits = SandboxLimits(timeout_s=timeout, isolation=config.sandbox)
        self.ctx = LeverContext(run, runtime, seed=config.seed, concurrency=config.concurrency, limits=limits,
                                observer=observer, on_saved=self.budget.save, unsafe_sandbox=config.unsafe_sandbox,
                                tick=self.budget.tick, seconds_left=lambda: self.budget.left(self.store.champion()))
        self.priors = tuple(priors.load()) if config.memory else ()
        self.budget.test_cells = self._test_cells

    # -- evaluations ------------------------------------------------------------------------------
    def _eval(self, cid: str, purpose: str, split: str, examples, label: str, challenger: bool = False) -> EvalResult:
        """Candidate `cid` on `examples`, registered under `purpose`, resumed if it was started before."""
        adapter = self.store.candidate(cid).adapter_version
        eid = self.store.evaluation_for(cid, purpose, lambda: self.store.add_evaluation(
            cid, split, self.config.seed, 1, len(examples),
            {"purpose": purpose_key(cid, purpose), "model": self.runtime.model_name(adapter)}))
        return self.ctx.run_rollouts(cid, eid, split, examples, label, challenger=challenger)

    def _show_champion(self) -> None:
        score = self.records.mean_of(self.store.champion(), "val")
        if score is not None:
            self.ui.on_champion(score)

    # -- the run ----------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        try:
            return self._run()
        except InfraFailure:  # not a score: the run stops, resumable once the cause is fixed, with no lesson recorded
            self.store.set_meta("status", "stopped")
            self.budget.save()
            raise
        finally:
            if self.tracker is not None:
                self.tracker.finish(self.store.get_meta("status") == "done")

    def _run(self) -> dict[str, Any]:
        store = self.store
        store.set_meta("status", "running")
        if store.champion() is None:
            try:
                source, rationale = self._initial_harness()
            except AgentModelError as e:
                store.set_meta("status", "stopped")
                raise AgentModelError(f"the Meta-Agent could not write the first harness: {e.message}", e.hint) from None
            version = store.add_harness_version(source, rationale)
            champion = store.add_candidate(version, None, "baseline", rationale)
            own = self.task.default_harness_path()
            who = (f"written by the Meta-Agent ({self.meta_model.spec.spelling})" if self.meta_model
                   else f"the task's harness {own.name}" if own else "sia's template harness")
            store.push_champion(champion, f"baseline: {who}", 0)
        baseline = self.records.baseline()
        self._plan_limits(baseline)
        self.ui.on_phase("baseline: validation")
        self._eval(baseline, "val", "val", self.val, "baseline val")
        self._show_champion()
        self.ui.on_phase("baseline: test (reported only)")
        store.set_meta("baseline_test", self._score_test(baseline, "baseline test"))
        self._record_error_control()
        stop_reason = store.get_meta("stop_reason")
        while stop_reason is None:
            stop_reason = self._generation()
        store.set_meta("stop_reason", stop_reason)
        champion = store.champion()
        self.ui.on_phase(f"final champion: test ({stop_reason})")
        self._score_test(champion, "final test")
        self._attribute(champion)
        store.set_meta("status", "done")
        self.budget.save()
        manifest.write(self.records)
        return run_summary(self.records)

    # -- the sealed test and the attribution ------------------------------------------------------
    def _score_test(self, cid: str, label: str) -> float | None:
        """Candidate `cid`'s one scoring on the test split, sealed once finished (`Store.seal_test`); a candidate sealed
        before is not scored again, its recorded scores stand. Returns its test score."""
        if self.store.test_seal(cid) is None or self.store.evaluation_id(cid, "test") is None:
            result = self._eval(cid, "test", "test", self.test, label)
            if self.records.finished(cid, "test"):
                self.store.seal_test(cid, result.evaluation_id, self.records.scores(result.evaluation_id))
        return self.records.score(cid, "test")

    def _pair(self, champion: str):
        """(baseline id, baseline candidate, champion candidate) when the run asks for attribution and has a baseline."""
        base = self.records.baseline()
        if not self.config.attribution or base is None:
            return None
        return base, self.store.candidate(base), self.store.candidate(champion)

    def _cells(self, champion: str) -> dict[str, str] | None:
        """The 2x2 attribution's candidates by cell (`sia.evaluation.stats.CELLS`) when the champion changed both the
        harness and the adapter of the baseline and the run asks for attribution, else None. A cell's candidate is one
        already recorded with that harness and adapter where there is one (an earlier champion), else a new one."""
        pair = self._pair(champion)
        if pair is None:
            return None
        base, b, c = pair
        if b.harness_version == c.harness_version or b.adapter_version == c.adapter_version:
            return None

        def cell(harness: str, adapter: str | None) -> str:
            known = self.store.candidates_with(harness, adapter)
            sealed = [k for k in known if self.store.test_seal(k)]
            if sealed or known:
                return (sealed or known)[0]
            return self.store.add_candidate(harness, adapter, "attribution", f"attribution: harness {harness}, adapter "
                                            f"{adapter or 'none'}")

        return {"h0,a0": base, "h,a0": cell(c.harness_version, b.adapter_version),
                "h0,a": cell(b.harness_version, c.adapter_version), "h,a": champion}

    def _unattributed(self, champion: str) -> dict[str, str] | None:
        """Why a run with attribution on has no 2x2 (its champion changed one lever or none), for the summary."""
        pair = self._pair(champion)
        if pair is None:
            return None
        _, b, c = pair
        changed = [name for name, old, new in (("harness", b.harness_version, c.harness_version),
                                               ("adapter", b.adapter_version or "none", c.adapter_version or "none"))
                   if old != new]
        if not changed:
            return {"skipped": "the final champion is the baseline: no gain to attribute"}
        return {"skipped": f"the final champion changed only the {changed[0]}, so its whole gain is that lever's (2x2 needs both)"}

    def _test_cells(self, cid: str) -> int:
        """Test scorings a run ending on champion `cid` still needs: its own, and the attribution's two single-lever cells
        (counted without making them)."""
        pair = self._pair(cid)
        if pair is None:
            return 1
        _, b, c = pair
        both = b.harness_version != c.harness_version and b.adapter_version != c.adapter_version
        if not both:
            return 1
        singles = [(c.harness_version, b.adapter_version), (b.harness_version, c.adapter_version)]
        return 1 + sum(1 for h, a in singles if not any(self.store.test_seal(k) for k in self.store.candidates_with(h, a)))

    def _attribute(self, champion: str) -> None:
        """Score the 2x2 attribution's single-lever cells on test and record each lever's effect and their interaction."""
        cells = self._cells(champion)
        if cells is None:
            self.store.set_meta("attribution", self._unattributed(champion))
            return
        for name, cid in cells.items():
            if self.store.test_seal(cid) is None:
                left = self.budget.budget_s - self.budget.elapsed()
                need = self.budget.seconds_for(len(self.test), cid if self.budget.rate(cid) else champion, fresh=True)
                if need > left:
                    self.store.set_meta("attribution", {"skipped": f"cell {name} ({cid}) needs ~{need:.0f}s on test, "
                                                                   f"{max(left, 0):.0f}s of the budget left"})
                    return
                self.ui.on_phase(f"attribution: cell {name} ({cid}) on test")
                self._score_test(cid, f"attribution {name}")
        scores = {name: self.records.scores_of(cid, "test") for name, cid in cells.items()}
        self.store.set_meta("attribution", {"candidates": cells, **factorial_2x2(scores, self.config.seed)})

    def _plan_limits(self, baseline: str) -> None:
        """Measure throughput on the first val examples; fit the timeout to it and, when the baseline would take over half
        the budget, limit the splits. What was changed is said once and kept in the summary's limits note."""
        store, c = self.store, self.config
        if store.get_meta("limits") is not None:
            return
        eid = store.evaluation_for(baseline, "val", lambda: store.add_evaluation(
            baseline, "val", c.seed, 1, len(self.val), {"purpose": purpose_key(baseline, "val"), "model": self.runtime.model_name()}))
        k = min(len(self.val), max(8, min(c.concurrency, 16)))
        if c.timeout is None:  # queueing at the policy service is part of a rollout's time: measure it before judging
            self.ctx.set_timeout(PROBE_STRETCH * self.task.spec.harness.timeout_s)
        t0 = time.monotonic()
        self.ui.on_phase(f"baseline: validation (measuring throughput on the first {k} examples)")
        self.ctx.run_rollouts(baseline, eid, "val", self.val[:k], "baseline val")
        rate = k / max(time.monotonic() - t0, 1e-3)
        limits = {"val": len(self.val), "test": len(self.test), "rate": rate}
        notes = [self._fit_timeout(eid)] if c.timeout is None else []
        need = (len(self.val) + 2 * len(self.test)) / rate
        if not (c.val_limit and c.test_limit) and need > 0.5 * max(c.budget - self.budget.elapsed(), 1.0):
            n = max(k, int(0.5 * (c.budget - self.budget.elapsed()) * rate / 3))
            val_n, test_n = min(len(self.val), c.val_limit or n), min(len(self.test), c.test_limit or n)
            why = (f"the baseline needs ~{need / 60:.1f} min at {rate:.2f} rollouts/s (val {len(self.val)} and test {len(self.test)} "
                   f"twice), over half the {c.budget / 60:.0f}-minute budget")
            if val_n >= len(self.val) and test_n >= len(self.test):  # nothing to cut: say so rather than "limited"
                notes.append(f"{why}; the splits are no larger than that, so the baseline leaves little for generations")
            elif not c.auto_limits:
                raise SiaError(why, f"pass --val-limit {val_n} --test-limit {test_n}, or drop --no-auto-limits")
            else:
                notes.append(f"{why}: limited to the first {val_n} val and {test_n} test examples")
                limits.update(val=val_n, test=test_n)
                store.resize_evaluation(eid, val_n)
                self.val, self.test = self.val[:val_n], self.test[:test_n]
                self.budget.test_n = test_n
        notes = [n for n in notes if n]
        limits["note"] = "; ".join(notes)
        for note in notes:
            self.ui.on_phase(note)
        store.set_meta("limits", {**limits, "timeout": self.ctx.timeout_s})

    def _fit_timeout(self, eid: str) -> str:
        """Set the run's timeout from the probe: twice its slowest rollout, never under the task's timeout_s nor over the
        probe's own limit. Returns what changed, or ""."""
        own = self.task.spec.harness.timeout_s
        rows = self.store.rollouts(eid)
        if any(r.error_type == "timeout" for r in rows):
            slowest = self.ctx.timeout_s
        else:
            slowest = max((r.duration_s or 0.0 for r in rows), default=0.0)
        timeout = max(own, min(self.ctx.timeout_s, float(math.ceil(2 * slowest))))
        self.ctx.set_timeout(timeout)
        if timeout <= own:
            return ""
        return (f"rollouts took up to {slowest:.0f}s at concurrency {self.config.concurrency} (waiting for the policy included), "
                f"so rollouts may take {timeout:.0f}s rather than the task's timeout_s {own:g}s (--timeout sets it)")

    def _initial_harness(self) -> tuple[str, str]:
        if self.meta_model is None:
            return initial_harness(self.task)
        self.ui.on_phase(f"Meta-Agent {self.meta_model.spec.spelling}: writing the first harness")
        return llm_initial_harness(self.task, self.meta_model, self._validate_first, self.config.agents.meta_attempts)

    def _validate_first(self, source: str, attempt: int) -> str | None:
        """Why a Meta-Agent harness cannot be the baseline, or None: it may run (see `refusal`) and runs on train examples."""
        refused = self.ctx.refusal(source)
        note = f"[Meta-Agent attempt {attempt}]" + (" [refused before running]" if refused else "")
        version = self.store.add_harness_version(source, note)
        if refused:
            return refused
        cid = self.store.add_candidate(version, None, "meta", f"Meta-Agent attempt {attempt}")
        examples = self.task.split("train")[: max(2, self.config.smoke_examples)]
        rows = self.store.rollouts(
            self._eval(cid, "meta", "train", examples, f"Meta-Agent attempt {attempt}", challenger=True).evaluation_id
        )
        bad = [r for r in rows if r.status != "ok"]
        if bad:
            msg = (bad[0].error or bad[0].error_type or "").strip().splitlines()
            return f"it failed on {len(bad)}/{len(rows)} train examples; first error ({bad[0].error_type}): " + " | ".join(msg[-3:])[:800]
        return None

    def _state(self, gen: int, champion: str) -> AgentState:
        self.ui.on_phase(f"generation {gen}: analysing the champion on train")
        ana_eid = self._eval(
            champion, "train", "train", self.task.split("train")[: self._analysis_size(champion)], "analysis (train)"
        ).evaluation_id
        adapter = self.records.adapter(champion)
        span, n = self.records.fresh_seconds_of(champion, "val")  # a change's evaluation scores prompts new to the service
        analysis = analyse(self.task, self.store, ana_eid)
        if self.store.get_meta("task_features") is None:  # the task as the run first measured it: what later runs compare with
            self.store.set_meta("task_features", asdict(priors.features(self.task, analysis)))
        return AgentState(
            self.task,
            self.records.source(champion),
            analysis,
            self._agents_memory(),
            self.task.split("train"),
            {sha for sha, a in self.store.tried_pairs() if a == adapter},
            gen,
            tuple(self.config.levers),
            self.config.seed,
            adapter,
            span / n if n > 1 else 60.0 / max(1, len(self.val)),
            len(self.val),
            self.budget.left(champion),
            self._agents_score(champion),
            ana_eid,
            machine_slowdown() if "weights" in self.config.levers else 1.0,
            self.priors,
            self._features(),
            self.budget.budget_s,
        )

    def _agents_memory(self) -> Memory:
        """The design memory as the agents read it: on the ladder by default (`sia.loop.holdout`)."""
        memory = self.records.memory()
        if self.config.gate.holdout == "exact":
            return memory
        steps = {g.gen: holdout.step(g.verdict.get("ci")) for g in self.store.generations()
                 if g.verdict and g.verdict.get("alpha") is not None}
        return holdout.ladder_memory(memory, steps)

    def _agents_score(self, champion: str) -> float | None:
        """The champion's validation score as the agents read it: rounded to its standard error on the ladder."""
        score = self.records.mean_of(champion, "val")
        detail = self.records.scored(champion, "val")
        if score is None or self.config.gate.holdout == "exact" or not detail:
            return score
        return holdout.rung(score, holdout.step(detail["ci"]))

    def _features(self) -> priors.Features | None:
        saved = self.store.get_meta("task_features")
        return priors.Features(**saved) if saved else None

    def _analysis_size(self, champion: str) -> int:
        """Train examples the analysis runs on: the configured number, or what a fifth of the time left buys (at least 4)."""
        eid = self.store.evaluation_id(champion, "train")
        if eid:  # this champion's analysis was sized before (an earlier generation, or a resume): reuse it as it was
            return self.store.evaluation(eid).n_examples
        fits = int(0.2 * max(self.budget.left(champion), 0.0) / self.budget.seconds_for(1, champion))
        return max(min(4, self.config.analysis_examples), min(self.config.analysis_examples, fits))

    def _generation_estimate(self, champion: str) -> float:
        """Seconds the cheapest generation should take: the shortest of those done, and with the harness lever at most
        the champion's rate times the rollouts a harness edit needs at least (analysis, smoke test, a first gate chunk).
        The cheapest, not the mean: the Feedback-Agent prices each change against the budget left and stops when none
        fits, so this check only asks whether any generation could. With the mean, one 10-minute weight update ended a
        run that had 3 minutes left for harness edits of one; with the shortest done alone, a run whose one generation
        was a 6-minute weight update stopped with 5.6 minutes left, never trying a harness edit on the new adapter."""
        done = [g.seconds for g in self.store.generations() if g.seconds]
        if done and "harness" not in self.config.levers:
            return min(done)
        n = self._analysis_size(champion) + self.config.smoke_examples + min(len(self.val), self.config.gate.chunk)
        return min(done + [self.budget.seconds_for(n, champion)])

    def _generation(self) -> str | None:
        """One generation; returns a stop reason when the loop should end."""
        store = self.store
        gens = store.generations()
        last = gens[-1] if gens else None
        types = {name: lever.proposal_type for name, lever in self.levers.items()}
        if last is not None and not last.decided:
            gen, proposal, champion = last.gen, from_dict(last.proposal, types), last.champion
        else:
            gen = (last.gen + 1) if last else 1
            if gen > self.config.max_generations:
                return f"generation budget of {self.config.max_generations} reached"
            champion = store.champion()
            if (
                self.records.memory().stalled_for() >= self.config.patience
                and self.budget.left(champion) <= PATIENT_SHARE * self.budget.budget_s
            ):
                return f"no gain in the last {self.config.patience} generations"
            reason = self.budget.exhausted(
                self.budget.test_reserve(champion) + self._generation_estimate(champion), "the final test and the shortest generation"
            )
            if reason:
                return reason
            state = self._state(gen, champion)
            self.ui.on_phase(f"generation {gen}: asking the Feedback-Agent ({self.agent.name})")
            try:
                decision = self.agent.decide(state)
            except AgentModelError as e:  # budget spent, recording exhausted, endpoint down: stop with the state saved
                self.budget.save()
                return f"Feedback-Agent model: {e}"
            proposal = decision.proposal
            prior = priors.prior(list(self.priors), proposal.kind, state.features) if state.features and self.priors else None
            store.add_generation(
                gen,
                champion,
                {
                    **to_dict(proposal),
                    "analysis": state.analysis.summary(),
                    "ranking": [list(r) for r in decision.ranking[:6]],
                    "prior": asdict(prior) if prior else None,
                },
            )
        self.ui.on_proposal(gen, proposal)
        t0, r0 = time.monotonic(), store.count_rollouts()
        if isinstance(proposal, Stop):
            store.update_generation(gen, status="decided", verdict=None, lesson=proposal.reason, finished=time.time())
            return f"Feedback-Agent stopped: {proposal.reason}"
        cid, val_eid = None, None
        if isinstance(proposal, Invalid):
            verdict = self._reject(proposal.reason)
        elif proposal.lever not in self.levers or proposal.lever not in self.config.levers:
            verdict = self._reject(f"the {proposal.lever} lever is not available in this run (levers: {', '.join(self.config.levers)})")
        else:
            challenger = self.levers[proposal.lever].challenger(self.ctx, gen, champion, proposal)
            cid = challenger.candidate
            if challenger.refused:
                verdict = self._reject(challenger.refused)
            else:
                if challenger.note:
                    self.ui.on_phase(f"generation {gen}: {challenger.note}")
                verdict, val_eid = self._gate(gen, champion, cid, cheaper=challenger.cheaper)
        lesson = lesson_for(proposal.kind, verdict.accept, verdict.delta, verdict.reason)
        if verdict.accept:
            self.ui.on_phase(f"generation {gen}: accepted; completing the new champion's validation scores")
            self._eval(cid, "val", "val", self.val, "new champion val")
            if store.champion() != cid:
                store.push_champion(cid, f"accepted in generation {gen}: {verdict.reason}", gen)
            self._show_champion()
        store.update_generation(
            gen,
            status="decided",
            candidate_id=cid,
            verdict=verdict.to_dict(),
            lesson=lesson,
            val_eval=val_eid,
            finished=time.time(),
            rollouts=store.count_rollouts() - r0,
            seconds=time.monotonic() - t0,
        )
        self._record_error_control()
        self.ui.on_verdict(gen, verdict, lesson)
        features = self._features()
        if self.config.memory and features is not None and cid is not None:
            priors.append(
                priors.Record(
                    self.task.name,
                    proposal.lever,
                    proposal.kind,
                    bool(verdict.accept),
                    float(verdict.delta or 0.0),
                    (time.monotonic() - t0) / 60,
                    features,
                    str(self.store.run_dir),
                )
            )
        self.budget.save()
        return None

    def _gate_fits(self, champion: str, cid: str, done: int) -> int:
        """Gate examples the time left buys: at the challenger's own rate once it has one, else at the champion's for half
        of that time (a challenger may well be slower, e.g. one that samples several answers)."""
        left = self.budget.left(champion)
        if done >= 2 and self.budget.rate(cid) is not None:
            return int(left / self.budget.seconds_for(1, cid))
        return int(0.5 * left / self.budget.seconds_for(1, champion))

    def _reject(self, reason: str, delta: float = 0.0) -> Verdict:
        return Verdict(False, delta, (0.0, 0.0), 1.0, 0, len(self.val), "none", False, reason)

    def _gate(self, gen: int, champion: str, cid: str, cheaper: bool = False) -> tuple[Verdict, str | None]:
        """Smoke test, then the sequential paired gate on validation against the champion (for a `cheaper` change: not
        worse by the margin, and fewer model calls per example)."""
        store = self.store
        self.ui.on_phase(f"generation {gen}: smoke test on {self.config.smoke_examples} train examples")
        smoke = self._eval(cid, "smoke", "train", self.task.split("train")[: self.config.smoke_examples], "smoke", challenger=True)
        rows = store.rollouts(smoke.evaluation_id)
        if rows and all(r.status == "error" for r in rows):
            first = (rows[0].error or "").splitlines()[0] if rows[0].error else rows[0].error_type
            return self._reject(f"harness fails on every smoke example ({rows[0].error_type}: {first})"), smoke.evaluation_id
        champ_scores = self.records.scores_of(champion, "val")
        eid = store.evaluation_for(
            cid, "val", lambda: store.add_evaluation(cid, "val", self.config.seed, 1, len(self.val), {"purpose": purpose_key(cid, "val")})
        )
        chunk = max(1, self.config.gate.chunk)
        gate = self.config.gate.non_inferiority() if cheaper else self.config.gate
        gate, level = alpha.gate_for(gate, self._gated(), len(self.val))
        self.ui.on_phase(f"generation {gen}: gate on validation (sequential, chunks of {chunk}, level {level:.2g}"
                         f"{f'; non-inferiority within {gate.margin}, and fewer model calls' if cheaper else ''})")
        verdict = None
        while True:  # one look per chunk; a chunk is cut to what the time left buys
            done = self.records.scores(eid)
            verdict = decided(champ_scores, done, binary=self.binary, config=gate)
            todo = [e for e in self.val if e.id not in done]
            if verdict is not None or not todo:
                break
            fits = self._gate_fits(champion, cid, len(done))
            if fits < 1:
                return self._reject(f"budget ran out before the gate decided ({len(done)}/{len(self.val)} examples)"), eid
            self.ctx.run_rollouts(cid, eid, "val", todo[: min(chunk, fits)], f"gate gen {gen}", challenger=True)
            if len(self.records.scores(eid)) == len(done):
                break  # nothing new was scored: decide on what there is
        if verdict is None:
            scores = self.records.scores(eid)
            verdict = decided(champ_scores, scores, binary=self.binary, config=gate) or compare(
                champ_scores, scores, binary=self.binary, config=gate
            )
        if cheaper and verdict.accept:
            mine, theirs = calls_per_example(store, eid), calls_per_example(store, store.evaluation_id(champion, "val"))
            if mine >= theirs:
                verdict = replace(
                    verdict,
                    accept=False,
                    reason=f"{verdict.reason}, but not cheaper: {mine:.2f} model calls per example against the champion's {theirs:.2f}",
                )
            else:
                verdict = replace(verdict, reason=f"{verdict.reason}; model calls per example {theirs:.2f} -> {mine:.2f}")
        return replace(verdict, alpha=level), eid

    def _record_error_control(self) -> None:
        """What the run's gates spent and what that guarantees, for the summary, `sia status` and the report."""
        gate = self.config.gate
        spent = [float(g.verdict["alpha"]) for g in self.store.generations() if g.verdict and g.verdict.get("alpha") is not None]
        self.store.set_meta("error_control", {"scope": gate.alpha_scope, "alpha": gate.alpha, "gates": spent,
                                              "guarantee": alpha.guarantee(gate.alpha_scope, gate.alpha, spent)})

    def _gated(self) -> list[bool]:
        """Whether each earlier gated attempt of the run was accepted, in order (attempts refused before a gate excluded)."""
        return [bool(g.verdict["accept"]) for g in self.store.generations() if g.verdict and g.verdict.get("alpha") is not None]
