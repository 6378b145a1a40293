"""`sia memory`: the records of gated changes that rank a new task's options (`sia.store.priors`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sia.cli.console import fail, out
from sia.errors import SiaError

memory_app = typer.Typer(add_completion=False, no_args_is_help=True,
                         help="The memory across runs and tasks (SIA_HOME/memory; SIA_MEMORY overrides the folder).")


@memory_app.command("add")
def add_cmd(
    run_dirs: Annotated[list[Path], typer.Argument(help="Finished run directories, e.g. runs made with --no-memory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Add the gated changes of finished runs to the memory, as a run with memory on would have; a run already there is
    skipped."""
    from sia import api

    try:
        r = api.memory_add(list(run_dirs))
    except SiaError as e:
        fail(e)
    if as_json:
        print(json.dumps(r, ensure_ascii=False))
        return
    for run, n in r["runs"].items():
        out.print(f"{run}: " + (f"{n} record(s) added" if isinstance(n, int) else n), highlight=False)
    out.print(f"memory: {r['memory']}", highlight=False)


@memory_app.command("list")
def list_cmd(
    task: Annotated[str | None, typer.Option(help="Only the records of this task.")] = None,
) -> None:
    """The records in the memory: task, change, verdict, validation gain and minutes."""
    from rich.table import Table

    from sia.store import priors

    records = [r for r in priors.load() if task is None or r.task == task]
    table = Table("task", "lever", "kind", "accepted", "gain", "minutes", title=f"{len(records)} record(s) in {priors.memory_file()}")
    for r in records:
        table.add_row(r.task, r.lever, r.kind, "yes" if r.accepted else "no", f"{r.delta:+.3f}", f"{r.minutes:.1f}")
    out.print(table)
