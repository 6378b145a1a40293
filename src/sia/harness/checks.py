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


def refusal(source: str, task: Task, isolation: str = "auto", unsafe: bool = False) -> str | None:
    """Why `source` may not run at all (it does not compile or define solve, the guards refuse it, or the sandbox here
    cannot contain it), or None."""
    try:
        check_harness_source(source)
    except HarnessError as e:
        return e.message
    refused = check_harness(source, task)
    if refused:
        return "refused by guards: " + "; ".join(refused)
    return sandbox_refusal(source, isolation, unsafe)


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


def is_template(source: str) -> bool:
    """Exactly a harness sia's template renders (the builtin agents' own), as opposed to one a user or an LLM wrote."""
    from sia.harness.template import read_config, render

    cfg = read_config(source)
    return cfg is not None and render(cfg) == source


def sandbox_refusal(source: str, isolation: str = "auto", unsafe: bool = False) -> str | None:
    """Why `source` may not run in the sandbox this machine offers, or None.

    Only bubblewrap keeps a harness from what it must not see. Where only the
    process sandbox runs, sia runs its own template harnesses (with a warning at
    start) and refuses others unless the user passed `--unsafe-sandbox`.
    """
    from sia.harness.isolation import detect

    how = detect(isolation)
    if how.kernel or unsafe or is_template(source):
        return None
    return (f"this harness was not written by sia's template, and only the process sandbox is available here ({how.note}): "
            "it could read hidden labels")
