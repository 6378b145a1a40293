"""`sia run`, `sia resume` and `sia rollback` as functions; the Python API calls these too."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sia.errors import SiaError, StoreError
from sia.loop.gate import GateConfig
from sia.loop.loop import Loop, Observer, RunConfig, _quiet
from sia.store.summary import run_summary
from sia.paths import default_run_dir
from sia.store.store import Store
from sia.task.loading import load_task

LEVERS = ("harness", "weights")


def parse_budget(text: str | float | int) -> float:
    """'10m', '90s', '1h30m' or a number of seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    t = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        return float(t)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", t)
    if not parts or "".join(f"{a}{b}" for a, b in parts) != t.replace(" ", ""):
        raise SiaError(f"cannot read budget {text!r}", "use e.g. 10m, 90s, 1h30m or a number of seconds")
    return sum(float(a) * {"h": 3600, "m": 60, "s": 1}[b] for a, b in parts)


def parse_levers(text: str | list[str]) -> list[str]:
    levers = [x.strip() for x in (text.split(",") if isinstance(text, str) else text) if x.strip()]
    bad = [x for x in levers if x not in LEVERS]
    if bad or not levers:
        raise SiaError(f"unknown lever(s) {bad or text!r}", f"choose from {', '.join(LEVERS)}, comma-separated")
    return list(dict.fromkeys(levers))


def _runtime(model: str | None, task_model: str | None = None):
    from sia.policy.runtime import PolicyRuntime

    if task_model:
        from sia.agents.clients import ANTHROPIC_OPENAI_URL, api_key, parse_model_spec

        spec = parse_model_spec(task_model)
        url = spec.base_url or (ANTHROPIC_OPENAI_URL if spec.provider == "anthropic" else "https://api.openai.com/v1")
        return PolicyRuntime.remote(url, spec.model, api_key(spec))
    return PolicyRuntime.local(model)


def check_agents(config: RunConfig) -> None:
    """Refuse inconsistent agent settings before anything is loaded, in one line each."""
    from sia.agents.clients import api_key, parse_model_spec, parse_prices

    if config.feedback not in ("builtin", "llm"):
        raise SiaError(f"unknown Feedback-Agent {config.feedback!r}", "use --feedback builtin or --feedback llm")
    if config.feedback == "llm" and not config.feedback_model:
        raise SiaError("--feedback llm needs --feedback-model", "e.g. --feedback-model anthropic:claude-sonnet-4-6")
    if config.feedback == "builtin" and config.feedback_model:
        raise SiaError("--feedback-model is set but the Feedback-Agent is builtin", "add --feedback llm")
    parse_prices(config.prices)
    for spelling in (config.feedback_model, config.meta_model, config.task_model):
        if spelling:
            spec = parse_model_spec(spelling)
            if not config.replay or spelling == config.task_model:
                api_key(spec)
    if config.task_model and "weights" in config.levers:
        raise SiaError(f"the weights lever trains a LoRA adapter on the local model, and --task-model {config.task_model} is remote",
                       "use --levers harness with a remote task model, or drop --task-model")


def build_agents(config: RunConfig, store: Store) -> dict[str, Any]:
    """The Loop's Feedback-Agent and Meta-Agent model from the run config (recorded, or replayed with --replay)."""
    from sia.agents.clients import AgentBudget, AgentModel, AgentModelConfig, Recording, parse_model_spec, parse_prices

    recording = Recording.load(config.replay) if config.replay else None
    for role in ("meta", "feedback") if recording else ():
        recording.skip(role, len(store.agent_calls(role)))
    mconf = AgentModelConfig(max_tokens=config.agent_max_tokens, prices=parse_prices(config.prices),
                             budget=AgentBudget(config.agent_budget_usd, config.agent_budget_tokens))
    out: dict[str, Any] = {"meta_attempts": config.meta_attempts}
    if config.meta_model:
        out["meta_model"] = AgentModel(parse_model_spec(config.meta_model), "meta", store, mconf, recording)
    if config.feedback == "llm":
        from sia.agents.llm import LLMAgentConfig, LLMFeedbackAgent

        model = AgentModel(parse_model_spec(config.feedback_model), "feedback", store, mconf, recording)
        note = "the task model is remote and LoRA training needs the local model" if config.task_model else None
        out["agent"] = LLMFeedbackAgent(model, store, LLMAgentConfig(context_tokens=config.agent_context_tokens,
                                                                     repairs=config.agent_repairs), weights_note=note)
    return out


def _finish(store: Store, task, summary: dict[str, Any]) -> dict[str, Any]:
    from sia.store.report import write_report

    summary["report"] = str(write_report(store, task))
    return summary


def run_config(task: str, *, budget: str | float = "10m", levers: str | list[str] | None = None, seed: int = 0,
               tau: float = 0.01, alpha: float = 0.05, **options: Any) -> RunConfig:
    """The checked RunConfig of `sia run`: lever and Meta-Agent defaults applied, agent settings refused early."""
    if levers is None:
        levers = "harness" if options.get("task_model") else "harness,weights"
    if options.get("meta_model") == "template":
        options["meta_model"] = None
    elif options.get("feedback") == "llm" and not options.get("meta_model") and options.get("feedback_model"):
        options["meta_model"] = options["feedback_model"]
    config = RunConfig(task=str(task), budget_s=parse_budget(budget), levers=parse_levers(levers), seed=seed,
                       gate=GateConfig(tau=tau, alpha=alpha, seed=seed), **options)
    check_agents(config)
    return config


def run(task: str, *, budget: str | float = "10m", levers: str | list[str] | None = None, seed: int = 0,
        run_dir: str | Path | None = None, observer: Observer = _quiet, model: str | None = None,
        tau: float = 0.01, alpha: float = 0.05, **options: Any) -> dict[str, Any]:
    """Improve the agent on `task` and return the run summary (see README 'sia run').

    `levers` defaults to harness and weights, or harness alone with a remote `task_model` (weights need the local model).
    """
    task_obj = load_task(task)
    task_obj.split("val")
    config = run_config(task, budget=budget, levers=levers, seed=seed, tau=tau, alpha=alpha, **options)
    run_dir = Path(run_dir) if run_dir else default_run_dir(task_obj.name, "run")
    if (run_dir / "sia.db").exists():
        raise StoreError(f"{run_dir} already holds a run", f"continue it with `sia resume {run_dir}` or pick another --run-dir")
    with Store(run_dir) as store:
        store.set_meta("run_config", config.to_json())
        store.set_meta("task", {"name": task_obj.name, "folder": str(task_obj.folder)})
        store.set_meta("model", model)
        with _runtime(model, config.task_model) as runtime:
            summary = Loop(task_obj, store, runtime, config, observer, **build_agents(config, store)).run()
        return _finish(store, task_obj, summary)


def resume(run_dir: str | Path, observer: Observer = _quiet, **raised: Any) -> dict[str, Any]:
    """Continue a run where it stopped, without redoing any finished rollout.

    `agent_budget_usd` / `agent_budget_tokens` raise the agents' budgets; a run that stopped because one was spent continues.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "sia.db").exists():
        raise StoreError(f"{run_dir} is not a sia run directory", "pass the --run-dir of an earlier `sia run`")
    with Store(run_dir) as store:
        raw = store.get_meta("run_config")
        if raw is None:
            raise StoreError(f"{run_dir} holds an evaluation, not a `sia run`", "start a run with `sia run`")
        config = RunConfig.from_json(raw)
        if raised:
            config = RunConfig.from_json({**config.to_json(), **raised})
            store.set_meta("run_config", config.to_json())
            reason = store.get_meta("stop_reason") or ""
            if "budget spent" in reason and reason.startswith("Feedback-Agent model"):
                store.db.execute("DELETE FROM meta WHERE key = 'stop_reason'")
        task_obj = load_task(store.get_meta("task")["folder"])
        check_agents(config)
        with _runtime(store.get_meta("model"), config.task_model) as runtime:
            summary = Loop(task_obj, store, runtime, config, observer, **build_agents(config, store)).run()
        return _finish(store, task_obj, summary)


def status(run_dir: str | Path) -> dict[str, Any]:
    with Store(run_dir, write=False) as store:
        info = store.get_meta("task")
        if info is None or store.get_meta("run_config") is None:
            raise StoreError(f"{run_dir} holds no `sia run`", "pass the --run-dir of a run")
        summary = run_summary(store, load_task(info["folder"]))
        summary["budget_s"] = store.get_meta("run_config")["budget_s"]
        lock = Path(run_dir) / ".lock"
        summary["running"] = _locked(lock)
        return summary


def _locked(lock: Path) -> bool:
    import fcntl
    import os

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
    with Store(run_dir) as store:
        champs = store.champions()
        if not champs:
            raise StoreError(f"{run_dir} has no champion history", "rollback works on runs made by `sia run`")
        match = None  # a candidate id names itself; a harness or adapter version the first champion that had it
        for c in champs:
            cand = store.candidate(c["candidate_id"])
            if to == c["candidate_id"] or (to in (cand["harness_version"], cand["adapter_version"]) and match is None):
                match = c["candidate_id"]
        if match is None:
            accepted = sorted({v for c in champs for v in (store.candidate(c["candidate_id"])["harness_version"],
                                                           store.candidate(c["candidate_id"])["adapter_version"]) if v})
            raise StoreError(f"{to!r} was never an accepted version of this run", f"choose one of {', '.join(accepted)}")
        before = store.champion()
        store.push_champion(match, f"rollback from {before} to {to}")
        if store.get_meta("status") == "done":
            store.set_meta("status", "rolled back")
        task_obj = load_task(store.get_meta("task")["folder"])
        summary = run_summary(store, task_obj)
        return _finish(store, task_obj, summary)
