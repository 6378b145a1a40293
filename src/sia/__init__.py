"""sia: improve an LLM agent (harness code + model weights) against a task's grader.

This module stays light: sandboxed rollout processes import `sia` too, so the
heavy parts (torch, transformers, the server) load only when used. The API
functions live in `sia.api`; the names below load it on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["evaluate", "run", "resume", "status", "rollback", "report", "trace", "load_task", "Grade"]
_API = {"evaluate", "run", "resume", "status", "rollback", "report", "trace"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from sia import api

        return getattr(api, name)
    if name == "load_task":
        from sia.task.loading import load_task

        return load_task
    if name == "Grade":
        from sia.task.graders import Grade

        return Grade
    raise AttributeError(name)
