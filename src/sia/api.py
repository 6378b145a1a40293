"""The Python API: `run`, `resume`, `evaluate`, `status`, `rollback`, `report`, `verify`. The CLI calls these, and so may users.

Each function checks its inputs before anything heavy is loaded (settings,
keys, the task and its data), opens the run directory through `sia.store.run.Run`,
starts the policy for the duration of the call, and returns plain data.
Progress is reported through callbacks (`observer`, `on_start`,
`on_rollout`): this layer never prints.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sia.errors import HarnessError, SiaError, StoreError
from sia.evaluation.executor import EvalConfig, EvalResult, execute
from sia.evaluation.options import EvalOptions
from sia.harness.checks import read_harness, sandbox_refusal
from sia.harness.sandbox import SandboxLimits
from sia.loop.config import RunConfig, checked, from_flat
from sia.loop.loop import Loop, Observer, _quiet
from sia.paths import default_run_dir
from sia.store.run import Run
from sia.store.store import Store
from sia.store.summary import run_summary
from sia.task.loading import Task, load_task


def _runtime(model: str | None, task_model: str | None = None, endpoint: str | None = None, backend: str = "auto"):
    """The policy for a command: a recording proxy to a remote model, or the local model (default: embedded)."""
    from sia.policy.runtime import PolicyRuntime

    if task_model:
        from sia.agents.config import ANTHROPIC_OPENAI_URL, api_key, parse_model_spec

        spec = parse_model_spec(task_model)
        url = spec.base_url or (ANTHROPIC_OPENAI_URL if spec.provider == "anthropic" else "https://api.openai.com/v1")
        return PolicyRuntime.remote(url, spec.model, api_key(spec))
    if endpoint:
        if not model:
            raise SiaError("--endpoint needs --model (the model name the endpoint serves)", "e.g. --model Qwen/Qwen2.5-7B-Instruct")
        return PolicyRuntime.remote(endpoint, model, os.environ.get("SIA_API_KEY") or os.environ.get("OPENAI_API_KEY"))
    return PolicyRuntime.local(model, backend=backend)


def check_keys(config: RunConfig) -> None:
    """Refuse agent models whose API key is missing, in one line, before anything is loaded."""
    from sia.agents.config import api_key, parse_model_spec

    a = config.agents
    for spelling in (a.feedback_model, a.meta_spec_spelling, a.task_model):
        if spelling and (not a.replay or spelling == a.task_model):
            api_key(parse_model_spec(spelling))


def check_endpoints(config: RunConfig) -> None:
    """An agent model on a server of the user's (openai:MODEL@URL) must answer before the run starts."""
    from sia.agents.config import parse_model_spec
    from sia.policy.runtime import check_endpoint

    a = config.agents
    if a.replay:
        return
    for spelling in dict.fromkeys(x for x in (a.feedback_model, a.meta_spec_spelling) if x):
        spec = parse_model_spec(spelling)
        if spec.base_url:
            check_endpoint(spec.base_url, os.environ.get("OPENAI_API_KEY"), timeout_s=5.0)


def build_agents(config: RunConfig, store: Store) -> dict[str, Any]:
    """The Loop's Feedback-Agent and Meta-Agent model from the run config (recorded, or replayed with --replay)."""
    from sia.agents.clients import AgentBudget, AgentModel, AgentModelConfig, Recording
    from sia.agents.config import parse_model_spec, parse_prices

    a = config.agents
    recording = Recording.load(a.replay) if a.replay else None
    for role in ("meta", "feedback") if recording else ():
        recording.skip(role, len(store.agent_calls(role)))
    mconf = AgentModelConfig(max_tokens=a.agent_max_tokens, prices=parse_prices(a.prices),
                             budget=AgentBudget(a.agent_budget_usd, a.agent_budget_tokens))
    out: dict[str, Any] = {}
    if a.meta_spec_spelling:
        out["meta_model"] = AgentModel(parse_model_spec(a.meta_spec_spelling), "meta", store, mconf, recording)
    if a.feedback == "llm":
        from sia.agents.llm import LLMAgentConfig, LLMFeedbackAgent

        model = AgentModel(parse_model_spec(a.feedback_model), "feedback", store, mconf, recording)
        note = "the task model is remote and LoRA training needs the local model" if a.task_model else None
        out["agent"] = LLMFeedbackAgent(model, store, LLMAgentConfig(context_tokens=a.agent_context_tokens, repairs=a.agent_repairs),
                                        weights_note=note)
    return out


def _loop(run: Run, config: RunConfig, observer: Observer, started_at: float) -> dict[str, Any]:
    with _runtime(run.store.get_meta("model"), config.agents.task_model, backend=config.policy_backend) as runtime:
        summary = Loop(run, runtime, config, observer, started_at=started_at, **build_agents(config, run.store)).run()
    summary["report"] = str(write_report(run))
    return summary


def export(run_dir: str | Path, to: str, uri: str | None = None) -> dict[str, Any]:
    """Log a finished (or stopped) run to MLflow or TensorBoard after the fact; `sia export`."""
    from sia.loop.tracking import export as export_run
    from sia.loop.tracking import open_sink

    with Run.open(run_dir, write=True) as run:
        sink = open_sink(to, uri, run, resume=False)
        out = export_run(run, sink)
        where = run.store.get_meta("track:mlflow")["uri"] if to == "mlflow" else uri or str(run.run_dir / "tensorboard")
        return {**out, "to": to, "where": where, "run_id": getattr(sink, "run_id", None)}


def prepare_run(task: str = "sentiment", **settings: Any) -> tuple[RunConfig, Task]:
    """Everything `sia run` checks before it loads a model or makes a run directory: settings, keys, endpoints, the task."""
    config = from_flat(task=str(task), **settings)
    check_keys(config)
    task_obj = load_task(config.task)
    task_obj.require("train", "val", "test")
    check_endpoints(config)
    return config, task_obj


def run(task: str = "sentiment", *, run_dir: str | Path | None = None, observer: Observer = _quiet, model: str | None = None,
        **settings: Any) -> dict[str, Any]:
    """Improve the agent on `task` and return the run summary (see README 'How the loop works').

    `settings` are the fields of `RunConfig`, flat: `budget="10m"`, `levers="harness,weights"`, `seed=0`, `tau=`, `alpha=`,
    `feedback="llm"`, `feedback_model=`, ... `levers` defaults to both, or harness alone with a remote `task_model`.
    """
    started_at = time.monotonic()
    config, task_obj = prepare_run(task, **settings)
    run_dir = Path(run_dir) if run_dir else default_run_dir(task_obj.name, "run")
    if (run_dir / "sia.db").exists():
        raise StoreError(f"{run_dir} already holds a run", f"continue it with `sia resume {run_dir}` or pick another --run-dir")
    with Store(run_dir) as store:
        store.set_meta("run_config", config.model_dump(mode="json"))
        store.set_meta("task", {"name": task_obj.name, "folder": str(task_obj.folder)})
        store.set_meta("model", model)
        return _loop(Run(store, task_obj), config, observer, started_at)


def resume(run_dir: str | Path, observer: Observer = _quiet, **raised: Any) -> dict[str, Any]:
    """Continue a run where it stopped, without redoing any finished rollout.

    `agent_budget_usd` / `agent_budget_tokens` raise the agents' budgets; a run that stopped because one was spent continues.
    """
    started_at = time.monotonic()
    run_dir = Path(run_dir)
    if not (run_dir / "sia.db").exists():
        raise StoreError(f"{run_dir} is not a sia run directory", "pass the --run-dir of an earlier `sia run`")
    with Run.open(run_dir, write=True) as run:
        config = RunConfig.model_validate(run.store.get_meta("run_config"))
        if raised:
            config = RunConfig.model_validate({**config.model_dump(), "agents": {**config.agents.model_dump(), **raised}})
            run.store.set_meta("run_config", config.model_dump(mode="json"))
            reason = run.store.get_meta("stop_reason") or ""
            if "budget spent" in reason and reason.startswith("Feedback-Agent model"):
                run.store.delete_meta("stop_reason")
        check_keys(config)
        return _loop(run, config, observer, started_at)


def evaluate(task: str | Path | Task = "sentiment", *, run_dir: Path | str | None = None,
             on_start: Callable[[int, int], None] | None = None, on_rollout: Callable[[Any], None] | None = None,
             on_loading: Callable[[str], None] | None = None, **settings: Any) -> EvalResult:
    """Run a harness (default: the task's own, or the template) on a split; `sia eval`. `settings` are `EvalOptions`'s
    fields (split, limit, samples, seed, concurrency, timeout, harness, endpoint, model, adapter, sandbox, ...), checked
    in one place, with one line naming the option to fix."""
    task_obj = task if isinstance(task, Task) else load_task(task)
    opts: EvalOptions = checked(EvalOptions, {**settings, "task": str(task_obj.folder if isinstance(task, Task) else task)}, "eval")
    split, limit, samples, seed, harness, sandbox = opts.split, opts.limit, opts.samples, opts.seed, opts.harness, opts.sandbox
    unsafe_sandbox, concurrency, timeout, adapter, model, endpoint = (opts.unsafe_sandbox, opts.concurrency, opts.timeout, opts.adapter,
                                                                       opts.model, opts.endpoint)
    task_obj.require(split)  # the data, a non-empty split and a grader that runs
    if harness is not None:
        source, rationale = read_harness(Path(harness)), f"harness from {Path(harness).name}"
    else:
        from sia.agents.meta import initial_harness

        source, rationale = initial_harness(task_obj)  # the task's own harness file, else the template
    run_dir = Path(run_dir) if run_dir else default_run_dir(task_obj.name, "eval")
    limits = SandboxLimits(timeout_s=timeout or task_obj.spec.harness.timeout_s, isolation=sandbox)
    config = EvalConfig(split=split, limit=limit, samples=samples, seed=seed, concurrency=concurrency, limits=limits,
                        unsafe_sandbox=unsafe_sandbox)
    refused = sandbox_refusal(source, sandbox, unsafe_sandbox)
    if refused:
        raise HarnessError(refused, "install bubblewrap, or pass --unsafe-sandbox if you trust this harness")
    with Store(run_dir) as store:
        store.set_meta("task", {"name": task_obj.name, "folder": str(task_obj.folder)})
        if on_loading:
            on_loading("loading the policy model...")
        with _runtime(model, endpoint=endpoint, backend=opts.policy_backend) as runtime:
            adapter_name = None
            if adapter is not None:
                adapter_name = re.sub(r"[^A-Za-z0-9_.-]", "-", Path(adapter).resolve().name)
                runtime.load_adapter(adapter_name, adapter)
                rationale += f" with adapter {adapter}"
            return execute(task_obj, source, store=store, runtime=runtime, config=config, rationale=rationale, adapter=adapter_name,
                           on_start=on_start, on_rollout=on_rollout)


def status(run_dir: str | Path) -> dict[str, Any]:
    """Where a run stands: its summary, its budget and whether a process is working on it now."""
    with Run.open(run_dir) as run:
        summary = run_summary(run)
        summary["budget_s"] = run.store.get_meta("run_config")["budget"]
        summary["running"] = _locked(Path(run_dir) / ".lock")
        if summary["status"] == "running" and not summary["running"]:
            summary["status"] = "interrupted"  # its process died; `sia resume` continues it
        return summary


def _locked(lock: Path) -> bool:
    import fcntl

    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def rollback(run_dir: str | Path, to: str) -> dict[str, Any]:
    """Make an earlier accepted version the champion again: a harness version (h2), an adapter version (a3) or a candidate (c3)."""
    with Run.open(run_dir, write=True) as run:
        store = run.store
        champs = store.champions()
        if not champs:
            raise StoreError(f"{run_dir} has no champion history", "rollback works on runs made by `sia run`")
        match = None  # a candidate id names itself; a harness or adapter version the first champion that had it
        for c in champs:
            cand = store.candidate(c.candidate_id)
            if to == c.candidate_id or (to in (cand.harness_version, cand.adapter_version) and match is None):
                match = c.candidate_id
        if match is None:
            accepted = sorted({v for c in champs for v in (store.candidate(c.candidate_id).harness_version,
                                                           store.candidate(c.candidate_id).adapter_version) if v})
            raise StoreError(f"{to!r} was never an accepted version of this run", f"choose one of {', '.join(accepted)}")
        before = store.champion()
        store.push_champion(match, f"rollback from {before} to {to}")
        store.set_meta("rolled_back_at", time.time())  # a candidate sealed on test before this may be scored again
        if store.get_meta("status") == "done":
            store.set_meta("status", "rolled back")
        summary = run_summary(run)
        summary["report"] = str(write_report(run))
        return summary


def verify(run_dir: str | Path) -> dict[str, Any]:
    """Recompute every hash of RUN_DIR/manifest.json (`sia verify`): {"ok", "changed": [...], "checked": {...}, "manifest_sha256"}."""
    from sia.loop import manifest

    with Run.open(run_dir) as run:
        changed, checked = manifest.verify(run)
    path = Path(run_dir) / "manifest.json"
    return {"ok": not changed, "changed": changed, "checked": checked, "manifest_sha256": manifest.file_sha256(path)}


def write_report(run: Run) -> Path:
    from sia.store.report import write_report as write

    return write(run)


def report(run_dir: str | Path) -> Path:
    """Write RUN_DIR/report.html and return its path."""
    with Run.open(run_dir) as run:
        return write_report(run)


def memory_add(run_dirs: list[str | Path], path: Path | None = None) -> dict[str, Any]:
    """Add finished runs' gated changes to the memory across runs (`sia.store.priors`); a run already in it is skipped.
    Returns the file, and per run the records added (or why none)."""
    from sia.store import priors

    path = path or priors.memory_file()
    have = {r.run for r in priors.load(path)}
    added: dict[str, Any] = {}
    for d in run_dirs:
        with Run.open(d) as run:
            key = str(run.run_dir)
            if key in have:
                added[key] = "already in memory"
                continue
            records = priors.records_of_run(run)
        for rec in records:
            priors.append(rec, path)
        added[key] = len(records) if records else "no gated change with the task's features recorded"
        have.add(key)
    return {"memory": str(path), "runs": added}


def trace(run_dir: str | Path, limit: int = 5, evaluation: str | None = None) -> list[dict[str, Any]]:
    """Recorded rollouts with their events, as plain data (`sia trace --json`)."""
    from dataclasses import asdict

    with Store(run_dir, write=False) as store:
        out = []
        for r in store.rollouts(evaluation, limit):
            item = asdict(r)
            item["events"] = [{"seq": e.seq, "kind": e.kind, "t": e.t, "data": e.data} for e in store.events(r.id)]
            out.append(item)
        return out
