"""`sia task check`: is a task folder usable, without loading a model?

Checks in order, each a line of the report: `task.toml` against its schema;
the data files (JSON lines, unique ids, a label row for every input); the
splits (none empty); the grader (it loads); the label fields the grader
declares (present in every label row); and a dry grading: each example's gold
output, as the grader declares it, graded against itself must score full
marks. A grader that declares nothing (a custom one without `@grader`) skips
the last two with a note saying how to declare them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sia.errors import TaskError
from sia.task.loading import SPLITS, Task, load_task


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None
    """True passed, False failed, None skipped."""
    detail: str


def check_task(path: str | Path) -> tuple[Task | None, list[Check]]:
    out: list[Check] = []
    try:
        task = load_task(path)
    except TaskError as e:
        return None, [Check("task.toml", False, str(e))]
    out.append(
        Check("task.toml", True, f"{task.name}: score {task.spec.score}, output {task.spec.output}, grader {task.spec.grader.entry}")
    )
    try:
        examples = task.examples
    except TaskError as e:
        return task, out + [Check("data", False, str(e))]
    out.append(Check("data", True, f"{len(examples)} examples with labels, ids unique"))
    sizes = task.sizes()
    empty = [s for s in SPLITS if not sizes[s]]
    out.append(
        Check("splits", not empty, ", ".join(f"{k} {v}" for k, v in sizes.items()) + (f"; empty: {', '.join(empty)}" if empty else ""))
    )
    try:
        fn = task.grader
    except TaskError as e:
        return task, out + [Check("grader", False, str(e))]
    base = getattr(fn, "func", fn)
    out.append(Check("grader", True, f"{task.spec.grader.entry} loads"))
    out += [Check("deprecated name", None, note) for note in task.deprecations]
    fields = getattr(base, "fields", None)
    if fields is None:
        out.append(Check("label fields", None, "the grader declares none (decorate it with sia.task.graders.grader('field', gold=...))"))
    else:
        missing = {f: [e.id for e in examples.values() if f not in e.target] for f in fields}
        bad = {f: ids for f, ids in missing.items() if ids}
        detail = ", ".join(f"'{f}' missing in {len(ids)} rows (e.g. {ids[0]!r})" for f, ids in bad.items())
        out.append(Check("label fields", not bad, detail or f"every label row has {', '.join(repr(f) for f in fields)}"))
        if bad:
            return task, out
    gold = getattr(base, "gold", None)
    if gold is None:
        out.append(Check("dry grading", None, "the grader declares no gold output (pass gold=... to sia.task.graders.grader)"))
        return task, out
    full = 1.0
    failures = []
    for ex in examples.values():
        try:
            g = task.grade(ex, gold(ex))
            if g.score < full:
                failures.append(f"{ex.id}: {g.score:g} ({g.feedback[:80]})")
        except Exception as e:
            failures.append(f"{ex.id}: {type(e).__name__}: {e}")
    note = getattr(base, "gold_note", "")
    if failures and note:
        out.append(Check("dry grading", None, f"{len(failures)} of {len(examples)} gold outputs score below {full:g}: {note}"))
    else:
        out.append(
            Check(
                "dry grading",
                not failures,
                f"each gold output scores full marks ({len(examples)} examples)"
                if not failures
                else f"{len(failures)} of {len(examples)} gold outputs do not score {full:g}; first: {failures[0]}",
            )
        )
    return task, out
