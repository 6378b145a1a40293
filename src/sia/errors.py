"""Typed errors, one family per boundary.

`SiaError` and its subclasses carry a one-line message and a hint on how to fix
the problem. The CLI prints them as one line, with no traceback. Failures inside
a rollout are not raised at all: they are recorded on the trajectory as data.
"""

from __future__ import annotations


class SiaError(Exception):
    """An error the user can act on: printed as one line with a hint."""

    boundary = "sia"

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class TaskError(SiaError):
    boundary = "task"


class HarnessError(SiaError):
    boundary = "harness"


class PolicyError(SiaError):
    boundary = "policy"


class StoreError(SiaError):
    boundary = "store"


class SetupError(SiaError):
    boundary = "setup"
