"""The checks a harness source must pass before it runs: it compiles, defines `solve`, and the guards let it through.

`refusal` is the one place that decides whether a harness may run at all, for
a proposed edit and for a Meta-Agent's attempt alike. The guards
(`sia.harness.guards`) explain refusals early and cheaply; the sandbox is what
keeps a harness away from what it must not see.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sia.errors import HarnessError
from sia.harness.guards import check_harness

if TYPE_CHECKING:
    from sia.task.loading import Task


def check_harness_source(source: str, name: str = "harness.py") -> None:
    """Refuse a harness that does not even compile, with one clear line."""
    try:
        compile(source, name, "exec")
    except SyntaxError as e:
        raise HarnessError(f"syntax error in {name} line {e.lineno}: {e.msg}", "fix the harness code") from None
    if "def solve" not in source:
        raise HarnessError(f"{name} defines no solve(example, ctx)", "a harness must define solve(example, ctx)")


def refusal(source: str, task: "Task") -> str | None:
    """Why `source` may not run at all (it does not compile or define solve, or the guards refuse it), or None."""
    try:
        check_harness_source(source)
    except HarnessError as e:
        return e.message
    refused = check_harness(source, task)
    return "refused by guards: " + "; ".join(refused) if refused else None


def read_harness(path: Path) -> str:
    """A harness file's source, checked to compile; one clear error otherwise."""
    if not path.is_file():
        raise HarnessError(f"harness file {path} not found", "pass an existing .py file to --harness")
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise HarnessError(f"cannot read harness file {path}: {e}", "pass a UTF-8 Python file") from None
    check_harness_source(source, path.name)
    return source
