"""The lever contract: what a lever makes of a proposal (`Challenger`), and what it may use to make it (`LeverContext`).

Its own module, below the builtin levers (`sia.loop.levers`, `sia.loop.weight_lever`)
and the registry that lists them, so that no lever imports another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from sia.errors import StoreError
from sia.evaluation.executor import EvalConfig, EvalResult, execute
from sia.harness.checks import refusal
from sia.harness.sandbox import SandboxLimits
from sia.loop.events import RunObserver
from sia.store.records import purpose_key
from sia.store.run import Run

if TYPE_CHECKING:
    from sia.policy.runtime import PolicyRuntime
    from sia.task.example import Example


@dataclass(frozen=True)
class Challenger:
    """What a lever made of a proposal: a candidate for the gate, or a refusal (recorded as a rejection)."""

    candidate: str | None
    refused: str | None = None
    note: str = ""
    """What the lever did, shown before the gate (e.g. the training summary)."""
    cheaper: bool = False
    """The change is meant to cost less, not to score more (distillation): judged for non-inferiority within the gate's
    margin, and accepted only with fewer model calls per example than the champion."""


class LeverContext:
    """What a lever may use: the run, the task, rollouts through a harness, adapter serving, progress."""

    def __init__(self, run: Run, runtime: PolicyRuntime, *, seed: int, concurrency: int, limits: SandboxLimits,
                 observer: RunObserver, on_saved: Callable[[], None], unsafe_sandbox: bool = False,
                 tick: Callable[[], None] = lambda: None, seconds_left: Callable[[], float] = lambda: float("inf")) -> None:
        """`seconds_left`: seconds of the budget left for this generation's work (the final test's time kept aside)."""
        self.run, self.runtime, self.seed = run, runtime, seed
        self.task = run.task
        self.store = run.store
        self._concurrency, self._limits, self._saved = concurrency, limits, on_saved
        self.observer = observer
        """Where a lever reports progress: `observer.on_phase(text)`, `on_train_start(steps)`, `on_train_step(stats)`."""
        self._unsafe, self._tick, self.seconds_left = unsafe_sandbox, tick, seconds_left

    @property
    def timeout_s(self) -> float:
        return self._limits.timeout_s

    def set_timeout(self, seconds: float) -> None:
        """Wall-clock limit of the rollouts started from now on."""
        self._limits = replace(self._limits, timeout_s=seconds)

    def refusal(self, source: str) -> str | None:
        """Why harness `source` may not run in this run (compile, guards, sandbox), or None."""
        return refusal(source, self.task, self._limits.isolation, self._unsafe)

    def _rollout_done(self, record) -> None:
        self.observer.on_rollout(record)
        self._tick()

    def serve_adapter(self, version: str | None) -> None:
        """Serve adapter `version` from the run directory if the policy does not have it yet (after a resume)."""
        if version and not self.runtime.has_model(version):
            self.runtime.load_adapter(version, self.store.adapter_path(version))

    def run_rollouts(self, cid: str, eid: str, split: str, examples: list[Example], label: str, *, samples: int = 1,
                     seed: int | None = None, model: str | None = None, challenger: bool = False) -> EvalResult:
        """Run `examples` into evaluation `eid` with candidate `cid`'s harness; `model` overrides its adapter. Test examples
        run only into the candidate's one sealed test evaluation (`Store.seal_test`): no lever scores on test."""
        if split == "test" or any(e.split == "test" for e in examples):
            ev = self.store.evaluation(eid)
            if ev is None or ev.split != "test" or ev.config.get("purpose") != purpose_key(cid, "test"):
                raise StoreError(f"the test split is sealed: {label!r} asked to run {cid} on test examples outside its one "
                                 "test scoring", "levers and agents work on train and validation; test is for the report")
        cand = self.store.candidate(cid)
        adapter = model or cand.adapter_version
        if model is None:
            self.serve_adapter(adapter)
        config = EvalConfig(split=split, seed=self.seed if seed is None else seed, samples=samples,
                            concurrency=self._concurrency, limits=self._limits, unsafe_sandbox=self._unsafe,
                            infra=("policy", "sandbox") if challenger else ("timeout", "policy", "sandbox"))
        self.observer.on_eval_start(label, eid)
        result = execute(self.task, self.run.source(cid), store=self.store, runtime=self.runtime, config=config,
                         harness_version=cand.harness_version, adapter=adapter, candidate_id=cid, evaluation_id=eid,
                         examples=examples, on_start=self.observer.on_eval_total,
                         on_rollout=self._rollout_done)
        self._saved()
        return result

    def collect(self, cid: str, purpose: str, examples: list[Example], label: str, *, samples: int, seed: int,
                model: str | None, temperature: float | None = None) -> str:
        """Rollouts of candidate `cid`'s unchanged harness on train `examples`, registered under `purpose`.

        With `temperature`, the policy samples those rollouts' generations at it,
        whatever the harness asks for (how GRPO gets G different samples).
        """
        eid = self.store.evaluation_for(cid, purpose, lambda: self.store.add_evaluation(
            cid, "train", seed, samples, len(examples),
            {"purpose": purpose_key(cid, purpose), "temperature": temperature, "model": self.runtime.model_name(model)}))
        if temperature is not None:
            self.runtime.service.explore(f"{eid}:", temperature)
        try:
            self.run_rollouts(cid, eid, "train", examples, label, samples=samples, seed=seed, model=model)
        finally:
            if temperature is not None:
                self.runtime.service.explore(f"{eid}:", None)
        return eid


class Lever(Protocol):
    name: str
    """What `--levers` and a proposal's `lever` field call it."""
    proposal_type: type
    """The proposal dataclass this lever takes (stored as JSON, rebuilt on resume)."""

    def challenger(self, ctx: LeverContext, gen: int, champion: str, proposal: Any) -> Challenger: ...
