"""The self-improvement loop: Execute, Analyse, Improve, Gate, Record, within budgets.

Every step is keyed in the run store, so a run killed at any point (SIGKILL
included) resumes where it stopped: evaluations are found by key and skip the
rollouts they already hold, a generation's proposal is stored before it is
acted on, and the champion history is a table. The held-out test split is
scored twice, for the baseline and for the final champion, and nothing else
ever sees it.

Budgets: wall time (counted across resumes), generations, rollouts and model
tokens. Time for the final test evaluation is reserved from the champion's
measured throughput, so a run ends within its budget with a test score.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from sia.evaluation.analysis import analyse
from sia.evaluation.executor import EvalConfig, EvalResult, evaluate
from sia.agents.builtin import AgentState, BuiltinFeedbackAgent
from sia.loop.gate import GateConfig, Verdict, compare, decided
from sia.store.memory import Entry, Memory, lesson_for
from sia.agents.clients import AgentModelError
from sia.harness.guards import check_harness
from sia.agents.meta import initial_harness, llm_initial_harness
from sia.policy.runtime import PolicyRuntime
from sia.agents.proposal import HarnessEdit, Invalid, Stop, WeightUpdate, from_dict, to_dict
from sia.harness.sandbox import SandboxLimits
from sia.store.store import Store
from sia.store.summary import run_summary
from sia.task.loading import Task


@dataclass
class RunConfig:
    task: str
    """Builtin task name or task folder."""
    budget_s: float = 600.0
    """Wall-clock budget of the whole run, resumes included."""
    max_generations: int = 20
    max_rollouts: int | None = None
    max_tokens: int | None = None
    patience: int = 5
    """Stop after this many generations in a row without an accepted change."""
    levers: list[str] = field(default_factory=lambda: ["harness", "weights"])
    seed: int = 0
    analysis_examples: int = 48
    """Train examples the champion is run on for the Feedback-Agent each time it changes."""
    smoke_examples: int = 2
    """Train examples a new harness must survive before it is evaluated on val."""
    concurrency: int = 16
    val_limit: int | None = None
    test_limit: int | None = None
    timeout_s: float | None = None
    gate: GateConfig = field(default_factory=GateConfig)
    feedback: str = "builtin"
    """Feedback-Agent: builtin (no extra model) or llm (--feedback-model)."""
    feedback_model: str | None = None
    meta_model: str | None = None
    """Model that writes the first harness; None: the template."""
    task_model: str | None = None
    """A remote task policy (openai:MODEL@URL or anthropic:MODEL) instead of the local model."""
    agent_budget_usd: float | None = None
    agent_budget_tokens: int | None = None
    agent_max_tokens: int = 4096
    agent_context_tokens: int = 16000
    agent_repairs: int = 2
    meta_attempts: int = 3
    prices: list[str] = field(default_factory=list)
    replay: str | None = None
    """Answer the agents' model calls from this run directory or JSONL recording instead of the network."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "RunConfig":
        d = dict(d)
        d["gate"] = GateConfig(**d.get("gate", {}))
        return cls(**d)


Observer = Callable[..., None]


def _quiet(event: str, **data: Any) -> None:
    pass


class Loop:
    def __init__(self, task: Task, store: Store, runtime: PolicyRuntime, config: RunConfig, observer: Observer = _quiet,
                 agent=None, meta_model=None, meta_attempts: int = 3) -> None:
        """`agent`: the Feedback-Agent (builtin by default); `meta_model`: an AgentModel that writes the first harness."""
        self.task, self.store, self.runtime, self.config = task, store, runtime, config
        self.ui = observer
        self.agent = agent or BuiltinFeedbackAgent()
        self.meta_model, self.meta_attempts = meta_model, meta_attempts
        self.binary = task.spec.score == "binary"
        self._t0 = time.monotonic()
        self._elapsed0 = float(store.get_meta("elapsed_s", 0.0))
        self.val = task.split("val")[: config.val_limit] if config.val_limit else task.split("val")
        self.test = task.split("test")[: config.test_limit] if config.test_limit else task.split("test")
        self.limits = SandboxLimits(timeout_s=config.timeout_s or task.spec.harness.timeout_s)

    # -- bookkeeping ------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self._elapsed0 + time.monotonic() - self._t0

    def _save_clock(self) -> None:
        self.store.set_meta("elapsed_s", self.elapsed())

    def _source(self, cid: str) -> str:
        return self.store.harness_source(self.store.candidate(cid)["harness_version"])

    def _eval(self, cid: str, split: str, examples, key: str, label: str) -> EvalResult:
        cand = self.store.candidate(cid)
        n_full = len(examples)
        eid = self.store.evaluation_for(key, lambda: self.store.add_evaluation(
            cid, split, self.config.seed, 1, n_full, {"purpose": key, "model": self.runtime.model_name(cand["adapter_version"])}))
        return self._run_chunk(cid, eid, split, examples, label)

    def ensure_adapter(self, version: str | None) -> None:
        """Serve adapter `version` from the run directory if the policy service does not have it yet (after a resume)."""
        if version and not self.runtime.has_model(version):
            self.runtime.load_adapter(version, self.store.adapter_path(version))

    def _run_chunk(self, cid: str, eid: str, split: str, examples, label: str, samples: int = 1,
                   seed: int | None = None, model: str | None = None) -> EvalResult:
        """Run `examples` into evaluation `eid`; `model` overrides the candidate's adapter (training collection)."""
        cand = self.store.candidate(cid)
        adapter = model or cand["adapter_version"]
        if model is None:
            self.ensure_adapter(adapter)
        config = EvalConfig(split=split, seed=self.config.seed if seed is None else seed, samples=samples,
                            concurrency=self.config.concurrency, limits=self.limits)
        self.ui("eval_start", label=label, evaluation=eid)
        result = evaluate(self.task, self._source(cid), store=self.store, runtime=self.runtime, config=config,
                          harness_version=cand["harness_version"], adapter=adapter, candidate_id=cid,
                          evaluation_id=eid, examples=examples,
                          on_start=lambda total, done: self.ui("eval_total", total=total, done=done),
                          on_rollout=lambda r: self.ui("rollout", record=r))
        self._save_clock()
        return result

    def _scores(self, eid: str) -> dict[str, float]:
        return {r["example_id"]: r["score"] for r in self.store.rollouts(eid)}

    def memory(self) -> Memory:
        entries = []
        for g in self.store.generations():
            if g["status"] != "decided" or not g["verdict"]:
                continue
            p, v = json.loads(g["proposal"]), json.loads(g["verdict"])
            if p["lever"] == "stop":
                continue
            entries.append(Entry(g["gen"], p["lever"], p["kind"], v["accept"], v["delta"], v["p_value"], g["rollouts"] or 0,
                                 g["seconds"] or 0.0, g["lesson"] or "", self.store.candidate(g["champion"])["adapter_version"]))
        return Memory(entries)

    def _budget_left(self, reserve_s: float) -> str | None:
        c = self.config
        if self.elapsed() + reserve_s >= c.budget_s:
            return f"wall-time budget: {self.elapsed():.0f}s used, {reserve_s:.0f}s kept for the final test, budget {c.budget_s:.0f}s"
        if c.max_rollouts is not None and self.store.count_rollouts() >= c.max_rollouts:
            return f"rollout budget of {c.max_rollouts} spent"
        if c.max_tokens is not None and self.store.count_tokens() >= c.max_tokens:
            return f"token budget of {c.max_tokens} spent"
        return None

    def _test_reserve(self, cid: str) -> float:
        """Seconds the final test evaluation of `cid` should take, from its measured val throughput."""
        eid = self.store.get_meta(f"eval:{cid}:val")
        rows = self.store.rollouts(eid) if eid else []
        if not rows:
            return 0.0
        span = max(r["created"] for r in rows) - min(r["created"] for r in rows)
        rate = len(rows) / span if span > 0 and len(rows) > 3 else 1.0
        done_test = self.store.get_meta(f"eval:{cid}:test")
        return 0.0 if done_test and self.store.evaluation(done_test)["finished"] else 1.2 * len(self.test) / max(rate, 0.05) + 5

    # -- the run ----------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.store.set_meta("status", "running")
        champion = self.store.champion()
        if champion is None:
            try:
                source, rationale = self._initial_harness()
            except AgentModelError as e:
                self.store.set_meta("status", "stopped")
                raise AgentModelError(f"the Meta-Agent could not write the first harness: {e.message}", e.hint) from None
            version = self.store.add_harness_version(source, rationale)
            champion = self.store.add_candidate(version, None, "baseline", rationale)
            self.store.push_champion(champion, "baseline from the Meta-Agent", 0)
        baseline = self.store.champions()[0]["candidate_id"]
        self.ui("phase", text="baseline: validation")
        self._eval(baseline, "val", self.val, f"{baseline}:val", "baseline val")
        self._show_champion()
        self.ui("phase", text="baseline: test (reported only)")
        base_test = self._eval(baseline, "test", self.test, f"{baseline}:test", "baseline test")
        self.store.set_meta("baseline_test", base_test.score)
        stop_reason = self.store.get_meta("stop_reason")
        while stop_reason is None:
            stop_reason = self._generation()
        self.store.set_meta("stop_reason", stop_reason)
        champion = self.store.champion()
        self.ui("phase", text=f"final champion: test ({stop_reason})")
        self._eval(champion, "test", self.test, f"{champion}:test", "final test")
        self.store.set_meta("status", "done")
        self._save_clock()
        return run_summary(self.store, self.task)

    def _initial_harness(self) -> tuple[str, str]:
        if self.meta_model is None:
            return initial_harness(self.task)
        self.ui("phase", text=f"Meta-Agent {self.meta_model.spec.spelling}: writing the first harness")
        return llm_initial_harness(self.task, self.meta_model, self._validate_first, self.meta_attempts)

    def _refusal(self, source: str) -> str | None:
        """Why `source` may not run at all (it does not compile or define solve, or the guards refuse it), or None."""
        from sia.errors import HarnessError
        from sia.evaluation.executor import check_harness_source

        try:
            check_harness_source(source)
        except HarnessError as e:
            return e.message
        refused = check_harness(source, self.task)
        return "refused by guards: " + "; ".join(refused) if refused else None

    def _validate_first(self, source: str, attempt: int) -> str | None:
        """Why a Meta-Agent harness cannot be the baseline, or None: it may run (see _refusal) and runs on train examples."""
        refused = self._refusal(source)
        version = self.store.add_harness_version(source, f"[Meta-Agent attempt {attempt}]" + (" [refused before running]" if refused else ""))
        if refused:
            return refused
        cid = self.store.add_candidate(version, None, "meta", f"Meta-Agent attempt {attempt}")
        rows = self.store.rollouts(self._eval(cid, "train", self.task.split("train")[: max(2, self.config.smoke_examples)],
                                              f"{cid}:meta", f"Meta-Agent attempt {attempt}").evaluation_id)
        bad = [r for r in rows if r["status"] != "ok"]
        if bad:
            msg = (bad[0]["error"] or bad[0]["error_type"] or "").strip().splitlines()
            return f"it failed on {len(bad)}/{len(rows)} train examples; first error ({bad[0]['error_type']}): " + " | ".join(msg[-3:])[:800]
        return None

    def _show_champion(self) -> None:
        eid = self.store.get_meta(f"eval:{self.store.champion()}:val")
        scores = self._scores(eid) if eid else {}
        if scores:
            self.ui("champion", score=sum(scores.values()) / len(scores))

    def _generation(self) -> str | None:
        """One generation; returns a stop reason when the loop should end."""
        gens = self.store.generations()
        last = gens[-1] if gens else None
        if last is not None and last["status"] != "decided":
            gen, proposal = last["gen"], from_dict(json.loads(last["proposal"]))
            champion = last["champion"]
        else:
            gen = (last["gen"] + 1) if last else 1
            if gen > self.config.max_generations:
                return f"generation budget of {self.config.max_generations} reached"
            champion = self.store.champion()
            mem = self.memory()
            if mem.stalled_for() >= self.config.patience:
                return f"no gain in the last {self.config.patience} generations"
            reason = self._budget_left(self._test_reserve(champion) + self._generation_estimate())
            if reason:
                return reason
            self.ui("phase", text=f"generation {gen}: analysing the champion on train")
            ana_eid = self._eval(champion, "train", self.task.split("train")[: self.config.analysis_examples],
                                 f"{champion}:train", "analysis (train)").evaluation_id
            analysis = analyse(self.task, self.store, ana_eid)
            adapter = self.store.candidate(champion)["adapter_version"]
            champ_val = self._scores(self.store.get_meta(f"eval:{champion}:val"))
            state = AgentState(self.task, self._source(champion), analysis, mem, self.task.split("train"),
                               {sha for sha, a in self.store.tried_pairs() if a == adapter}, gen,
                               tuple(self.config.levers), self.config.seed, adapter,
                               self._val_seconds(champion) / max(1, len(self.val)), len(self.val),
                               self.config.budget_s - self.elapsed() - self._test_reserve(champion),
                               sum(champ_val.values()) / len(champ_val) if champ_val else None, ana_eid)
            if getattr(self.agent, "model", None) is not None:
                self.ui("phase", text=f"generation {gen}: asking the Feedback-Agent ({self.agent.model.spec.spelling})")
            try:
                proposal = self.agent.decide(state)
            except AgentModelError as e:  # budget spent, recording exhausted, endpoint down: stop with the state saved
                self._save_clock()
                return f"Feedback-Agent model: {e}"
            self.store.add_generation(gen, champion, {**to_dict(proposal), "analysis": analysis.summary(),
                                                      "ranking": self.agent.last_ranking[:6]})
        self.ui("proposal", gen=gen, proposal=proposal)
        t0, r0 = time.monotonic(), self.store.count_rollouts()
        if isinstance(proposal, Stop):
            self.store.update_generation(gen, status="decided", verdict=None, lesson=proposal.reason, finished=time.time())
            return f"Feedback-Agent stopped: {proposal.reason}"
        if isinstance(proposal, Invalid):
            verdict, cid, val_eid = self._reject(proposal.reason), None, None
        else:
            verdict, cid, val_eid = self._try(gen, champion, proposal)
        lesson = lesson_for(proposal.kind, verdict.accept, verdict.delta, verdict.reason)
        if verdict.accept:
            self.ui("phase", text=f"generation {gen}: accepted; completing the new champion's validation scores")
            self._eval(cid, "val", self.val, f"{cid}:val", "new champion val")
            if self.store.champion() != cid:
                self.store.push_champion(cid, f"accepted in generation {gen}: {verdict.reason}", gen)
            self._show_champion()
        self.store.update_generation(gen, status="decided", candidate_id=cid, verdict=verdict.to_dict(), lesson=lesson,
                                     val_eval=val_eid, finished=time.time(), rollouts=self.store.count_rollouts() - r0,
                                     seconds=time.monotonic() - t0)
        self.ui("verdict", gen=gen, verdict=verdict, lesson=lesson)
        self._save_clock()
        return None

    def _val_seconds(self, cid: str) -> float:
        """Seconds one full validation evaluation of `cid` took (what a gate costs at most)."""
        eid = self.store.get_meta(f"eval:{cid}:val")
        rows = self.store.rollouts(eid) if eid else []
        return max(r["created"] for r in rows) - min(r["created"] for r in rows) if len(rows) > 1 else 60.0

    def _generation_estimate(self) -> float:
        done = [g["seconds"] for g in self.store.generations() if g["seconds"]]
        return sum(done) / len(done) if done else 30.0

    def _reject(self, reason: str, delta: float = 0.0) -> Verdict:
        return Verdict(False, delta, (0.0, 0.0), 1.0, 0, len(self.val), "none", False, reason)

    def _try(self, gen: int, champion: str, proposal: HarnessEdit | WeightUpdate) -> tuple[Verdict, str | None, str | None]:
        if isinstance(proposal, WeightUpdate):
            return self._try_weights(gen, champion, proposal)
        return self._try_harness(gen, champion, proposal)

    def _try_weights(self, gen: int, champion: str, proposal: WeightUpdate) -> tuple[Verdict, str | None, str | None]:
        from sia.errors import SiaError
        from sia.loop.weight_lever import run_weight_update

        try:
            version, info = run_weight_update(self, gen, champion, proposal)
        except SiaError as e:
            return self._reject(f"weight update refused: {e.message}"), None, None
        if version is None:
            return self._reject(info), None, None
        self.ui("phase", text=f"generation {gen}: {info}")
        cid = self.store.add_candidate(self.store.candidate(champion)["harness_version"], version, proposal.lever,
                                       f"{proposal.rationale} | {info}", parent=champion)
        return self._gate(gen, champion, cid)

    def _try_harness(self, gen: int, champion: str, proposal: HarnessEdit) -> tuple[Verdict, str | None, str | None]:
        adapter = self.store.candidate(champion)["adapter_version"]
        refused = self._refusal(proposal.source)
        if refused:
            version = self.store.add_harness_version(proposal.source, f"[rejected before running] {proposal.rationale}")
            cid = self.store.add_candidate(version, adapter, proposal.lever, proposal.rationale, parent=champion)
            return self._reject(f"invalid harness: {refused}"), cid, None
        version = self.store.add_harness_version(proposal.source, proposal.rationale,
                                                 parent=self.store.candidate(champion)["harness_version"])
        cid = self.store.add_candidate(version, adapter, proposal.lever, proposal.rationale, parent=champion)
        return self._gate(gen, champion, cid)

    def _gate(self, gen: int, champion: str, cid: str) -> tuple[Verdict, str | None, str | None]:
        """Smoke test, then the sequential paired gate on validation against the champion."""
        self.ui("phase", text=f"generation {gen}: smoke test on {self.config.smoke_examples} train examples")
        smoke = self._eval(cid, "train", self.task.split("train")[: self.config.smoke_examples], f"{cid}:smoke", "smoke")
        rows = self.store.rollouts(smoke.evaluation_id)
        if rows and all(r["status"] == "error" for r in rows):
            first = (rows[0]["error"] or "").splitlines()[0] if rows[0]["error"] else rows[0]["error_type"]
            return self._reject(f"harness fails on every smoke example ({rows[0]['error_type']}: {first})"), cid, smoke.evaluation_id
        champ_scores = self._scores(self.store.get_meta(f"eval:{champion}:val"))
        key = f"{cid}:val"
        eid = self.store.evaluation_for(key, lambda: self.store.add_evaluation(
            cid, "val", self.config.seed, 1, len(self.val), {"purpose": key}))
        chunk = max(1, self.config.gate.chunk)
        self.ui("phase", text=f"generation {gen}: gate on validation (sequential, chunks of {chunk})")
        verdict = None
        for _look in range(0, len(self.val), chunk):
            done = self._scores(eid)
            verdict = decided(champ_scores, done, binary=self.binary, config=self.config.gate)
            if verdict is not None:
                break
            if self.elapsed() + self._test_reserve(champion) >= self.config.budget_s:
                return self._reject(f"budget ran out before the gate decided ({len(done)}/{len(self.val)} examples)"), cid, eid
            todo = [e for e in self.val if e.id not in done][:chunk]
            self._run_chunk(cid, eid, "val", todo, f"gate gen {gen}")
        if verdict is None:
            verdict = decided(champ_scores, self._scores(eid), binary=self.binary, config=self.config.gate) or \
                compare(champ_scores, self._scores(eid), binary=self.binary, config=self.config.gate)
        return verdict, cid, eid
