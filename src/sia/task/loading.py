"""Tasks: a folder with `task.toml`, data files and a grader.

What the agent sees (`inputs`) and what only the grader sees (`labels`) live in
separate files and separate fields of `Example`; the harness process is only
ever sent `Example.visible()`. Splits are fixed by a seed: the example ids are
sorted, shuffled with `random.Random(seed)` and cut into train / val / test, so
the same folder always gives the same split.

A task's output can be text (a label, an answer) or a program (`output =
"program"`): the harness returns source code and the grader runs and scores it.
The grader is called in the sia process, never in the harness sandbox; a grader
that executes untrusted programs should use `sia.harness.sandbox` itself.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import random
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sia.errors import TaskError
from sia.paths import task_data_dir
from sia.task.example import Example
from sia.task.graders import Grade, Grader
from sia.task.spec import TaskSpec

RENAMED = {"sia.grader": "sia.task.graders", "sia.graders": "sia.task.graders"}
"""Module paths a task.toml written for an earlier sia may name for a builtin grader: they keep working, with a note."""
BUILTIN_DIR = Path(__file__).resolve().parents[1] / "plugins" / "tasks"
"""The builtin task folders: plugins loaded by path (`sia/plugins/tasks/`), whose graders may use any part of sia."""
SPLITS = ("train", "val", "test")


def _read_jsonl(path: Path) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise TaskError(f"{path}:{lineno}: not valid JSON ({e.msg})", "fix or regenerate the data file") from None
            if not isinstance(row, dict) or "id" not in row:
                raise TaskError(f"{path}:{lineno}: each line must be an object with an 'id'", "fix the data file")
            rid = str(row.pop("id"))
            if rid in rows:
                raise TaskError(f"{path}:{lineno}: duplicate id {rid!r}", "ids must be unique")
            rows[rid] = row
    return rows


def _load_callable(task_dir: Path, entry: str, what: str) -> Any:
    if ":" not in entry:
        raise TaskError(f"{what} entry {entry!r} must look like 'module:function' or 'file.py:function'", "fix task.toml")
    target, name = entry.rsplit(":", 1)
    try:
        if target.endswith(".py"):
            path = task_dir / target
            if not path.is_file():
                raise TaskError(f"{what} file {path} does not exist", "fix the entry in task.toml")
            spec = importlib.util.spec_from_file_location(f"sia_task_{task_dir.name}_{path.stem}".replace("-", "_"), path)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except TaskError:
        raise
    except Exception as e:  # a broken grader file is the task's fault, reported in one line
        raise TaskError(f"cannot load {what} {entry!r}: {type(e).__name__}: {e}", "fix the task's code") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise TaskError(f"{what} {entry!r}: no function {name!r}", "fix the entry in task.toml")
    return fn


class Task:
    """A loaded task folder. Data is read lazily so listing tasks stays cheap."""

    def __init__(self, folder: Path, spec: TaskSpec) -> None:
        self.folder = folder
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def data_dir(self) -> Path:
        """Committed data sits in the folder; prepared (fetched) data in the sia cache."""
        return task_data_dir(self.name) if self.spec.data.prepare else self.folder

    def data_ready(self) -> bool:
        files = [self.spec.data.inputs, self.spec.data.labels] + ([self.spec.labels_file] if self.spec.labels_file else [])
        return all((self.data_dir / f).is_file() for f in files)

    def prepare(self) -> None:
        """Build the data files of a task whose data is fetched at setup time."""
        if not self.spec.data.prepare:
            return
        fn = _load_callable(self.folder, self.spec.data.prepare, "prepare")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fn(self.data_dir)

    @cached_property
    def examples(self) -> dict[str, Example]:
        if not self.data_ready():
            hint = "run `make setup` (or `sia setup`)" if self.spec.data.prepare else "restore the data files"
            raise TaskError(f"task {self.name!r}: data files missing in {self.data_dir}", hint)
        inputs = _read_jsonl(self.data_dir / self.spec.data.inputs)
        labels = _read_jsonl(self.data_dir / self.spec.data.labels)
        missing = sorted(set(inputs) - set(labels))
        if missing:
            raise TaskError(f"task {self.name!r}: {len(missing)} inputs have no label (e.g. {missing[0]!r})", "fix the labels file")
        out: dict[str, Example] = {}
        if self.spec.splits.field:
            key = self.spec.splits.field
            for eid in sorted(inputs):
                split = inputs[eid].get(key)
                if split not in SPLITS:
                    raise TaskError(f"task {self.name!r}: example {eid!r} has {key}={split!r}", "each must be train, val or test")
                out[eid] = Example(eid, split, inputs[eid], labels[eid], self.labels)
            return out
        ids = sorted(inputs)
        random.Random(self.spec.splits.seed).shuffle(ids)
        sizes = self._split_sizes(len(ids))
        start = 0
        for split, size in zip(SPLITS, sizes):
            for eid in ids[start : start + size]:
                out[eid] = Example(eid, split, inputs[eid], labels[eid], self.labels)
            start += size
        return out

    @cached_property
    def labels(self) -> list[str]:
        if not self.spec.labels_file:
            return list(self.spec.labels)
        path = self.data_dir / self.spec.labels_file
        try:
            labels = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise TaskError(f"task {self.name!r}: cannot read labels file {path} ({e})", "run `sia setup`") from None
        return [str(x) for x in labels]

    def _split_sizes(self, n: int) -> list[int]:
        s = self.spec.splits
        raw = [s.train, s.val, s.test]
        sizes = [int(x) if x >= 1 else int(round(x * n)) for x in raw]
        if sum(sizes) > n:
            raise TaskError(f"task {self.name!r}: splits ask for {sum(sizes)} examples but the data has {n}", "fix [splits] in task.toml")
        return sizes

    def split(self, name: str) -> list[Example]:
        if name not in SPLITS:
            raise TaskError(f"unknown split {name!r}", "use train, val or test")
        return [e for e in self.examples.values() if e.split == name]

    def require(self, *splits: str) -> None:
        """Refuse, in one line, a task whose named splits are empty or whose grader cannot even grade an empty answer."""
        for name in splits:
            if not self.split(name):
                raise TaskError(f"task {self.name!r}: the {name} split is empty", "give it examples in [splits] of task.toml")
        base = getattr(self.grader, "func", self.grader)
        fields = getattr(base, "fields", None)
        for f in fields or ():
            missing = [e.id for e in self.examples.values() if f not in e.target]
            if missing:
                have = ", ".join(sorted(self.examples[missing[0]].target)) or "none"
                raise TaskError(f"task {self.name!r}: the grader reads the label field {f!r}, missing in {len(missing)} rows "
                                f"(e.g. {missing[0]!r}); its label row has fields: {have}",
                                "rename the field in the labels file, or pick the grader that reads yours (README 'Graders')")
        example = (self.split("train") or self.split(splits[0]))[0]
        try:
            self.grade(example, "")
        except TaskError:
            raise
        except Exception as e:
            fields = ", ".join(sorted(example.target)) or "none"
            raise TaskError(f"task {self.name!r}: the grader {self.spec.grader.entry!r} fails on example {example.id!r} "
                            f"({type(e).__name__}: {e}); its label row has fields: {fields}",
                            "make the grader read the fields your labels file has (see README 'Writing a task')") from None

    def sizes(self) -> dict[str, int]:
        return {s: len(self.split(s)) for s in SPLITS}

    @property
    def deprecations(self) -> list[str]:
        """One line for each old name the task folder uses (it still works)."""
        target, _, name = self.spec.grader.entry.rpartition(":")
        if target in RENAMED:
            return [f"grader entry {self.spec.grader.entry!r} is an old name: write \"{RENAMED[target]}:{name}\" in task.toml "
                    "(the old one keeps working for now)"]
        return []

    @cached_property
    def grader(self) -> Grader:
        target, _, name = self.spec.grader.entry.rpartition(":")
        entry = f"{RENAMED[target]}:{name}" if target in RENAMED else self.spec.grader.entry
        fn = _load_callable(self.folder, entry, "grader")
        options = self.spec.grader.options
        return functools.partial(fn, **options) if options else fn

    def grade(self, example: Example, output: Any) -> Grade:
        grade = self.grader(example, output)
        if not isinstance(grade, Grade):
            raise TaskError(f"grader of {self.name!r} returned {type(grade).__name__}, not Grade", "return sia.task.graders.Grade")
        return grade

    def default_harness_path(self) -> Path | None:
        return self.folder / self.spec.harness.default if self.spec.harness.default else None

    def public_info(self) -> dict[str, Any]:
        """The task description given to the harness (no data, no labels of examples)."""
        s = self.spec
        info = {"name": s.name, "description": s.description, "instruction": s.instruction, "labels": self.labels,
                "multi_label": s.multi_label, "output": s.output, "input_field": s.input_field}
        if s.input_template:
            info["input_template"] = s.input_template
        if self.data_ready():
            first = next(iter(self.examples.values()), None)
            info["fields"] = sorted(first.inputs) if first else []
        if s.harness.helper:
            info["files"] = self.public_files
            info["helper"] = s.harness.helper[0].removesuffix(".py")
        return info

    @cached_property
    def public_files(self) -> dict[str, str]:
        """The task's public helper files (see [harness] helper), read once: what harnesses may import."""
        out = {}
        for name in self.spec.harness.helper:
            path = self.folder / name
            if path.suffix != ".py" or "/" in name:
                raise TaskError(f"task {self.name!r}: helper {name!r} must be a .py file in the task folder", "fix [harness] helper")
            try:
                out[name] = path.read_text(encoding="utf-8")
            except OSError as e:
                raise TaskError(f"task {self.name!r}: cannot read its helper {path} ({e})", "fix [harness] helper in task.toml") from None
        return out


def builtin_tasks() -> list[str]:
    return sorted(p.name for p in BUILTIN_DIR.iterdir() if (p / "task.toml").is_file())


def load_task(name_or_path: str | Path) -> Task:
    """Load a builtin or zoo task by name (builtin first), or a task folder by path."""
    from sia.task.zoo import zoo_dir

    path = Path(name_or_path)
    builtin, zoo = BUILTIN_DIR / str(name_or_path), zoo_dir() / str(name_or_path)
    if path.is_dir() or path.name == "task.toml":
        folder = path.parent if path.name == "task.toml" else path
    elif "/" not in str(name_or_path) and (builtin / "task.toml").is_file():
        folder = builtin
    elif "/" not in str(name_or_path) and (zoo / "task.toml").is_file():
        folder = zoo
    else:
        folder = path
    toml_path = folder / "task.toml"
    if not folder.is_dir():
        raise TaskError(f"task {str(name_or_path)!r} not found", f"use a builtin task ({', '.join(builtin_tasks())}), a zoo task "
                        "(`make zoo` builds them; `sia tasks` lists them) or a folder with task.toml")
    if not toml_path.is_file():
        raise TaskError(f"{folder} has no task.toml", "a task folder needs task.toml; see README 'Writing a task'")
    try:
        raw = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise TaskError(f"{toml_path}: malformed TOML ({e})", "fix the syntax") from None
    try:
        spec = TaskSpec.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top level)"
        raise TaskError(f"{toml_path}: {where}: {first['msg']}", "fix task.toml (see README 'Writing a task')") from None
    return Task(folder.resolve(), spec)
