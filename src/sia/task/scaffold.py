"""`sia task new NAME`: a task folder to fill in, with every key of task.toml written out and explained.

The folder works as written (three example questions with numeric answers,
graded by the builtin `numeric` grader), so `sia task check` passes on it at
once; replace the data files with your own and edit the keys.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sia.errors import TaskError

TASK_TOML = '''# task.toml of {name}: every key sia reads, with its default. `sia task check {folder}` checks the folder.
name = "{name}"
description = "One paragraph: what the task is. Shown to the harness and the agents."
# What the agent is asked to do; the template harness puts it before each example.
instruction = "Answer the question with a number only."
metric = "accuracy"            # a name for the score, shown in reports
score = "binary"               # "binary" (0/1 per example) or "continuous" (F1, a speedup, a loss improvement...)
output = "text"                # "text" (an answer), "program" (source the grader runs) or "json" (settings)
# labels = ["yes", "no"]       # a closed set of answers, if the task has one (or labels_file = "labels.json")
# multi_label = false          # several labels per answer (graded by F1; needs score = "continuous")
input_field = "question"       # the visible field the template harness shows when an example has only one
# input_template = "Question: {{question}}"  # how the template harness shows an example (str.format over its fields);
#                              # default: the input field alone, or "field: value" lines when there are several

[data]
inputs = "inputs.jsonl"        # one JSON object per line: {{"id": ..., visible fields}}; the harness sees these
labels = "labels.jsonl"        # one per line: {{"id": ..., target fields}}; only the grader sees these
# prepare = "prepare.py:prepare"  # builds the data files at `sia setup` (for data fetched rather than committed)
source = "where the data comes from"
license = "its licence"

[splits]
seed = 0                       # the seeded shuffle that cuts examples into train / val / test
train = 0.5                    # a fraction (< 1) or a count (>= 1) of examples
val = 0.25
test = 0.25
# field = "split"              # or: a visible field naming each example's split

[grader]
# A builtin grader (see README "Graders") or your own: "grader.py:grade" in this folder.
entry = "sia.task.graders:numeric"
[grader.options]               # keyword arguments of the grader, e.g. a tolerance
abs_tol = 0

[harness]
timeout_s = 60                 # wall-clock limit of one rollout, queueing at the policy service included
# default = "harness.py"       # a harness of your own instead of sia's template
# helper = ["helper.py"]       # public files given to harnesses (ctx.task["files"]): describe, check, neighbours, baseline
'''

GRADER = '''"""A grader of your own: grade(example, output) -> Grade. Name it in task.toml: entry = "grader.py:grade"."""

from sia.task.graders import Grade, grader, normalise_text


@grader("answer", gold=lambda example: str(example.target["answer"]))  # the label field it reads; the output that scores 1
def grade(example, output):
    got = normalise_text(output.splitlines()[0]) if isinstance(output, str) and output.strip() else ""
    if not got:
        return Grade(0.0, False, "empty output", outcome="unparseable")
    ok = got == normalise_text(str(example.target["answer"]))
    return Grade(float(ok), ok, "correct" if ok else f"expected {{example.target['answer']!r}}")
'''

EXAMPLES = [("How many legs does a spider have?", 8), ("How many days are in a leap year?", 366),
            ("How many sides does a hexagon have?", 6), ("How many minutes are in two hours?", 120)]


def new_task(folder: str | Path, with_grader: bool = False) -> Path:
    """Write a new task folder (refusing to overwrite one) and return it."""
    folder = Path(folder)
    name = folder.name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise TaskError(f"task name {name!r} must be letters, digits, '-', '_' or '.'", "e.g. sia task new my-task")
    if folder.exists() and any(folder.iterdir()):
        raise TaskError(f"{folder} already exists and is not empty", "choose another name, or remove it")
    folder.mkdir(parents=True, exist_ok=True)
    toml = TASK_TOML.format(name=name, folder=folder)
    if with_grader:
        toml = toml.replace('entry = "sia.task.graders:numeric"\n[grader.options]               # keyword arguments of the grader, '
                            'e.g. a tolerance\nabs_tol = 0', 'entry = "grader.py:grade"')
    (folder / "task.toml").write_text(toml, encoding="utf-8")
    with open(folder / "inputs.jsonl", "w") as fi, open(folder / "labels.jsonl", "w") as fl:
        for i, (q, a) in enumerate(EXAMPLES):
            fi.write(json.dumps({"id": f"q{i + 1}", "question": q}) + "\n")
            fl.write(json.dumps({"id": f"q{i + 1}", "answer": a}) + "\n")
    if with_grader:
        (folder / "grader.py").write_text(GRADER, encoding="utf-8")
    return folder
