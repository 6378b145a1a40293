"""sia: improve an LLM agent (harness code + model weights) against a task's grader.

This module stays light: sandboxed rollout processes import `sia` too, so the
heavy parts (torch, transformers, the server) load only when used.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["evaluate", "run", "resume", "load_task", "Grade"]


def __getattr__(name: str) -> Any:
    if name == "evaluate":
        from sia.api_eval_tmp import run_eval

        return run_eval
    if name in ("run", "resume", "rollback", "status"):
        from sia import api as runner

        return getattr(runner, name)
    if name == "load_task":
        from sia.task.loading import load_task

        return load_task
    if name == "Grade":
        from sia.task.graders import Grade

        return Grade
    raise AttributeError(name)
