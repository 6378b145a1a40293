"""Runs rollouts of one candidate on one split, concurrently, and records them.

Each (example, sample) pair is one rollout: a sandboxed harness process whose
model calls go through the policy service. A pool of threads waits on the
processes (the work happens in the processes and in the model's batcher); the
calling thread grades each finished rollout and writes it to the store in one
transaction. Rollouts already in the store for this evaluation are skipped, so
an interrupted evaluation resumes without redoing work.

Seeds are derived from (evaluation seed, example id, sample index), so two
candidates evaluated with the same seed see the same sampling seeds per
example: the comparison is paired.

Only sia decides that a rollout failed for the machine's reasons
(`InfraWatch`): a `policy` error counts only when the policy service recorded
a failure on the rollout's door (or stopped serving), and a timeout only when
the service saw the rollout ask the policy or its harness had not yet started. A
harness that reports a policy failure the service did not see gets a harness
error: otherwise a proposer could veto any evaluation it is losing.
"""

from __future__ import annotations

import json
import time
import zlib
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any

from sia.errors import HarnessError, SiaError
from sia.evaluation.stats import mean_ci
from sia.harness.checks import check_harness_source, sandbox_refusal
from sia.harness.sandbox import SandboxLimits, SandboxResult, run_in_sandbox
from sia.policy.door import DoorRecord
from sia.policy.runtime import PolicyRuntime
from sia.store.records import NewRollout
from sia.store.store import Store
from sia.task.graders import Grade
from sia.task.loading import Example, Task


@dataclass
class EvalConfig:
    split: str = "val"
    """Which split to evaluate: train, val or test."""
    limit: int | None = None
    """Evaluate only the first N examples of the split (in split order)."""
    samples: int = 1
    """Rollouts per example."""
    seed: int = 0
    """Base seed; each rollout's sampling seed is derived from it."""
    concurrency: int = 8
    """Rollouts running at once."""
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    unsafe_sandbox: bool = False
    """Run harnesses sia did not write even where only the process sandbox is available."""
    infra: tuple[str, ...] = ("timeout", "policy", "sandbox")
    """Rollout errors that, when they are most of an evaluation, stop it as an infrastructure failure (a challenger's
    timeouts are its own fault, so a gate counts only policy and sandbox errors)."""


@dataclass
class EvalResult:
    run_dir: str
    task: str
    split: str
    evaluation_id: str
    candidate_id: str
    harness_version: str
    adapter: str | None
    score: float
    ci: tuple[float, float]
    n: int
    rollouts: int
    samples: int
    failures: dict[str, int]
    per_example: dict[str, float]
    duration_s: float
    rollouts_per_s: float
    policy_stats: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"task": self.task, "split": self.split, "score": self.score, "ci": list(self.ci), "n": self.n,
                "rollouts": self.rollouts, "samples": self.samples, "failures": self.failures, "run_dir": self.run_dir,
                "evaluation_id": self.evaluation_id, "candidate_id": self.candidate_id, "harness_version": self.harness_version,
                "adapter": self.adapter, "duration_s": round(self.duration_s, 2), "rollouts_per_s": round(self.rollouts_per_s, 3),
                "policy": self.policy_stats}


INFRA = ("timeout", "policy", "sandbox")
"""Rollout errors that are the machine's, not the harness's: the policy did not answer in time, or could not be reached."""


class InfraFailure(SiaError):
    boundary = "evaluation"


class InfraWatch:
    """Stops an evaluation whose rollouts mostly fail for infrastructure reasons: that is not a score."""

    def __init__(self, total: int, timeout_s: float, kinds: tuple[str, ...] = INFRA, share: float = 0.5, at_least: int = 8) -> None:
        self.total, self.timeout_s, self.share, self.at_least, self.counted = total, timeout_s, share, at_least, kinds
        self.done, self.kinds, self.first = 0, Counter(), ""

    def add(self, record: NewRollout, machine_time: bool = True) -> None:
        """Count a finished rollout; a timeout counts as the machine's only if the rollout's time went to the machine
        (`machine_time`): it had asked the policy, or its sandbox had not yet started the harness. A rollout that timed
        out in between spent its time in the harness's own code."""
        self.done += 1
        if record.error_type in self.counted and (record.error_type != "timeout" or machine_time):
            self.kinds[record.error_type] += 1
            self.first = self.first or (record.error or record.error_type)

    def failing(self) -> bool:
        bad = sum(self.kinds.values())
        return bad > 0 and self.done >= min(self.at_least, self.total) and bad >= self.share * self.done

    def raise_if_failing(self) -> None:
        if not self.failing():
            return
        bad = sum(self.kinds.values())
        what = ", ".join(f"{n} {k}" for k, n in self.kinds.most_common())
        if self.kinds["timeout"] >= bad / 2:
            hint = (f"the {self.timeout_s:g}s per rollout includes waiting for the shared policy service: raise --timeout, "
                    "lower --concurrency, or use a faster or remote model")
        else:
            hint = "check the policy service or the endpoint; the first error: " + self.first.splitlines()[0][:200]
        raise InfraFailure(f"{bad} of {self.done} rollouts failed for infrastructure reasons ({what}), so no score is reported", hint)


def rollout_seed(seed: int, example_id: str, sample: int) -> int:
    return zlib.crc32(f"{seed}:{example_id}:{sample}".encode()) & 0x7FFFFFFF


def verified(res: SandboxResult, record: DoorRecord, serving: bool) -> SandboxResult:
    """`res`, with a `policy` error the policy service has no record of turned into the harness's own error."""
    if res.ok or res.error_type != "policy" or record.failures or not serving:
        return res
    return replace(res, error_type="harness_exception",
                   message="the harness reported a policy failure that the policy service did not record for this rollout: "
                           + res.message)


def _llm_events(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"kind": "llm_call", "t": c.get("t", 0.0), "data": {k: v for k, v in c.items() if k != "t"}} for c in calls]


def _grade(task: Task, example: Example, res: SandboxResult) -> tuple[Grade, str | None, str | None]:
    if not res.ok:
        first = res.message.splitlines()[0] if res.message else ""
        return Grade(0.0, False, f"{res.error_type}: {first}"[:500]), res.error_type, res.message[:8000]
    try:
        return task.grade(example, res.output), None, None
    except Exception as e:  # a grader bug must not lose the rollout
        return Grade(0.0, False, f"grader error: {type(e).__name__}: {e}"[:500]), "grader", f"{type(e).__name__}: {e}"


def execute(task: Task, source: str, *, store: Store, runtime: PolicyRuntime, config: EvalConfig,
             harness_version: str | None = None, adapter: str | None = None, lever: str = "baseline",
             rationale: str = "evaluation", evaluation_id: str | None = None, candidate_id: str | None = None,
             examples: list[Example] | None = None, on_start: Callable[[int, int], None] | None = None,
             on_rollout: Callable[[NewRollout], None] | None = None) -> EvalResult:
    check_harness_source(source)
    refused = sandbox_refusal(source, config.limits.isolation, config.unsafe_sandbox)
    if refused:
        raise HarnessError(refused, "install bubblewrap, or pass --unsafe-sandbox if you trust this harness")
    if examples is None:
        examples = task.split(config.split)
        if config.limit is not None:
            examples = examples[: config.limit]
    if harness_version is None:
        harness_version = store.add_harness_version(source, rationale)
    if candidate_id is None:
        candidate_id = store.add_candidate(harness_version, adapter, lever, rationale)
    if evaluation_id is None:
        evaluation_id = store.add_evaluation(candidate_id, config.split, config.seed, config.samples, len(examples),
                                             {"limit": config.limit, "concurrency": config.concurrency,
                                              "model": runtime.model_name(adapter)})
    done = store.done_keys(evaluation_id)
    jobs = [(ex, s) for ex in examples for s in range(config.samples) if (ex.id, s) not in done]
    if on_start:
        on_start(store.evaluation(evaluation_id).expected, len(done))
    model = runtime.model_name(adapter)
    task_info = task.public_info()
    t0 = time.monotonic()

    def run_one(ex: Example, sample: int) -> tuple[NewRollout, bool]:
        rid = f"{evaluation_id}:{ex.id}:{sample}"
        seed = rollout_seed(config.seed, ex.id, sample)
        door = runtime.service.open_door(rid, model)
        try:
            res = run_in_sandbox(
                source,
                ex.visible(),
                door=door,
                task_info=task_info,
                seed=seed,
                sample=sample,
                output_kind=task.spec.output,
                limits=config.limits,
            )
        finally:
            record = runtime.service.close_door(door)
        res = verified(res, record, runtime.service.healthy())
        calls = record.calls
        grade, error_type, error = _grade(task, ex, res)
        now = time.time()
        began = any(e["kind"] == "start" for e in res.events)  # the sandbox got as far as loading the harness
        events = sorted(_llm_events(calls) + [e for e in res.events if e["kind"] != "start"], key=lambda e: e.get("t", 0.0))
        if res.ok:  # the output itself is stored once, on the rollout
            events.append({"kind": "output", "t": now, "data": {"type": type(res.output).__name__, "chars": len(json.dumps(res.output))}})
        else:
            events.append(
                {
                    "kind": "error",
                    "t": now,
                    "data": {
                        "boundary": "harness" if error_type != "policy" else "policy",
                        "error_type": error_type,
                        "message": error,
                        "stdout_tail": res.stdout_tail,
                        "stderr_tail": res.stderr_tail,
                        "exit_code": res.exit_code,
                    },
                }
            )
        events.append({"kind": "grade", "t": now, "data": grade.to_dict()})
        return NewRollout(
            rid,
            evaluation_id,
            candidate_id,
            ex.id,
            ex.split,
            sample,
            seed,
            "ok" if res.ok else "error",
            error_type,
            error,
            res.output if res.ok else None,
            grade.score,
            grade.passed,
            grade.feedback,
            res.duration_s,
            events,
        ), record.asked or not began

    watch = InfraWatch(len(jobs), config.limits.timeout_s, config.infra)
    with ThreadPoolExecutor(max_workers=max(1, config.concurrency), thread_name_prefix="sia-rollout") as pool:
        pending = set()
        queue = list(jobs)
        while queue or pending:
            while queue and len(pending) < config.concurrency and not watch.failing():
                ex, s = queue.pop(0)
                pending.add(pool.submit(run_one, ex, s))
            if not pending:
                break
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                record, machine_time = fut.result()
                store.add_rollout(record)
                watch.add(record, machine_time)
                if on_rollout:
                    on_rollout(record)
    watch.raise_if_failing()
    duration = time.monotonic() - t0
    return summarise(task, store, evaluation_id, harness_version, adapter, duration, len(jobs), runtime.stats())


def summarise(
    task: Task,
    store: Store,
    evaluation_id: str,
    harness_version: str,
    adapter: str | None,
    duration: float = 0.0,
    ran: int = 0,
    policy_stats: dict | None = None,
) -> EvalResult:
    ev = store.evaluation(evaluation_id)
    rows = store.rollouts(evaluation_id)
    by_example: dict[str, list[float]] = {}
    failures: dict[str, int] = {}
    for r in rows:
        by_example.setdefault(r.example_id, []).append(r.score)
        if r.error_type:
            failures[r.error_type] = failures.get(r.error_type, 0) + 1
        elif not r.passed:
            failures["wrong"] = failures.get("wrong", 0) + 1
    per_example = {k: sum(v) / len(v) for k, v in by_example.items()}
    score, ci = mean_ci(list(per_example.values()), binary=task.spec.score == "binary" and ev.samples == 1)
    if ev.finished is None and len(rows) == ev.expected:
        store.finish_evaluation(evaluation_id, score, ci)
    return EvalResult(
        str(store.run_dir),
        task.name,
        ev.split,
        evaluation_id,
        ev.candidate_id,
        harness_version,
        adapter,
        score,
        ci,
        len(per_example),
        len(rows),
        ev.samples,
        failures,
        per_example,
        duration,
        ran / duration if duration > 0 else 0.0,
        policy_stats or {},
    )
