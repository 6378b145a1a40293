"""The Meta-Agent writes the first harness. The builtin one fills the template from the task spec.

The template harness asks with the task's instruction, generates freely and
parses the answer (the first allowed label mentioned, or all of them for
multi-label tasks). An LLM Meta-Agent, writing harnesses from the description
and a few training examples, plugs in here later with the same signature.
"""

from __future__ import annotations

from sia.harness_template import make_config, render
from sia.task import Task


def initial_harness(task: Task) -> tuple[str, str]:
    """(source, rationale) of the first harness for `task`."""
    return render(make_config(task.public_info())), "Meta-Agent template: task instruction, free generation, answer parsing"
