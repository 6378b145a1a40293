"""`sia eval` as a function: load the task and harness, start the policy, run, summarise.

The CLI and the Python API (`sia.evaluate`) both call `run_eval`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from sia.errors import HarnessError, SiaError
from sia.evaluation.executor import EvalConfig, EvalResult, check_harness_source, evaluate
from sia.paths import default_run_dir
from sia.harness.sandbox import SandboxLimits
from sia.store.store import Store
from sia.task.loading import Task, load_task


def default_harness_source(task: Task) -> tuple[str, str]:
    """The task's own harness file if it names one, else the template harness."""
    path = task.default_harness_path()
    if path is not None:
        if not path.is_file():
            raise HarnessError(f"task {task.name!r} names harness {path}, which does not exist", "fix [harness] in task.toml")
        return path.read_text(encoding="utf-8"), f"task default harness {path.name}"
    from sia.agents.meta import initial_harness

    return initial_harness(task)


def read_harness(path: Path) -> str:
    if not path.is_file():
        raise HarnessError(f"harness file {path} not found", "pass an existing .py file to --harness")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise HarnessError(f"cannot read harness file {path}: {e}", "pass a UTF-8 Python file") from None


def start_runtime(endpoint: str | None, model: str | None, console=None):
    """The policy for a command: a recording proxy to `endpoint`, or the local model (default: embedded)."""
    from sia.policy.runtime import PolicyRuntime

    if endpoint:
        if not model:
            raise SiaError("--endpoint needs --model (the model name the endpoint serves)", "e.g. --model Qwen/Qwen2.5-7B-Instruct")
        return PolicyRuntime.remote(endpoint, model, os.environ.get("SIA_API_KEY") or os.environ.get("OPENAI_API_KEY"))
    if console is None:
        return PolicyRuntime.local(model)
    with console.status("loading the policy model..."):
        return PolicyRuntime.local(model)


def run_eval(task: str | Path | Task, *, harness: Path | str | None = None, split: str = "val", limit: int | None = None,
             samples: int = 1, seed: int = 0, concurrency: int = 8, timeout: float | None = None,
             run_dir: Path | str | None = None, endpoint: str | None = None, model: str | None = None,
             adapter: Path | str | None = None, console=None) -> EvalResult:
    task_obj = task if isinstance(task, Task) else load_task(task)
    task_obj.split(split)  # validates the split name and that the data is there
    if harness is not None:
        source, rationale = read_harness(Path(harness)), f"harness from {Path(harness).name}"
        check_harness_source(source, Path(harness).name)
    else:
        source, rationale = default_harness_source(task_obj)
    if run_dir is None:
        run_dir = default_run_dir(task_obj.name, "eval")
    limits = SandboxLimits(timeout_s=timeout or task_obj.spec.harness.timeout_s)
    config = EvalConfig(split=split, limit=limit, samples=samples, seed=seed, concurrency=concurrency, limits=limits)
    with Store(run_dir) as store:
        store.set_meta("task", {"name": task_obj.name, "folder": str(task_obj.folder)})
        with start_runtime(endpoint, model, console) as runtime:
            adapter_name = None
            if adapter is not None:
                adapter_name = re.sub(r"[^A-Za-z0-9_.-]", "-", Path(adapter).resolve().name)
                runtime.load_adapter(adapter_name, adapter)
                rationale += f" with adapter {adapter}"
            if console is None:
                return evaluate(task_obj, source, store=store, runtime=runtime, config=config, rationale=rationale, adapter=adapter_name)
            return _with_progress(task_obj, source, store, runtime, config, rationale, console, adapter_name)


def _with_progress(task, source, store, runtime, config, rationale, console, adapter=None) -> EvalResult:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from sia.cli.live import RateColumn

    state = {"score": 0.0, "n": 0}
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                  TextColumn("score {task.fields[score]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=console) as progress:
        bar = progress.add_task(f"{task.name}/{config.split}", total=None, score="--")

        def on_start(total: int, already: int) -> None:
            progress.update(bar, total=total, completed=already)

        def on_rollout(record) -> None:
            state["score"] += record.score
            state["n"] += 1
            progress.update(bar, advance=1, score=f"{state['score'] / state['n']:.3f}")

        return evaluate(task, source, store=store, runtime=runtime, config=config, rationale=rationale, adapter=adapter,
                        on_start=on_start, on_rollout=on_rollout)
