"""`sia run`'s own loop driven by a scripted Feedback-Agent, for benches that measure one step of the loop."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _phases():
    """An observer that prints the loop's phases, nothing else."""
    from sia.loop.events import RunObserver

    class Phases(RunObserver):
        def on_phase(self, text: str) -> None:
            print(f"  phase: {text}", flush=True)

    return Phases()


@contextmanager
def scripted_run(task: str, config, agent, run_dir: Path) -> Iterator[tuple]:
    """A fresh run directory for `task` (a builtin name or a folder) whose generations `agent` decides; yields
    (run, loop) with the policy runtime up, so the bench can call `loop.run()` and evaluate more before it closes."""
    from sia.loop.loop import Loop
    from sia.policy.runtime import PolicyRuntime
    from sia.store.run import Run
    from sia.store.store import Store
    from sia.task.loading import load_task

    shutil.rmtree(run_dir, ignore_errors=True)
    loaded = load_task(task)
    with Store(run_dir) as store:
        store.set_meta("run_config", config.model_dump(mode="json"))
        store.set_meta("task", {"name": loaded.name, "folder": str(loaded.folder)})
        run = Run(store, loaded)
        with PolicyRuntime.local() as runtime:
            yield run, Loop(run, runtime, config, agent=agent, observer=_phases())
