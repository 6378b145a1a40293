"""The Meta-Agent writes the first harness: from the template, or by an LLM from the task description.

The builtin one fills the template from the task spec: ask with the task's
instruction, generate freely, parse the answer (the first allowed label
mentioned, or all of them for multi-label tasks).

The LLM one is shown the task's public description, a few train examples with
their train answers (never anything of val or test) and the template harness
as a worked example of the `ctx` API, and answers with a whole harness file.
Each answer is validated by the caller (it parses, defines `solve`, passes the
guards and runs without error on a handful of train examples); a failure is
shown to the model, which tries again. After `attempts` failures the template
is used, and the rationale says why.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from sia.agents.texts import prompt
from sia.errors import HarnessError
from sia.harness.template import make_config, render
from sia.task.loading import Task

FENCE_RE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.S)  # a reply cut at max_tokens leaves the fence open


def initial_harness(task: Task) -> tuple[str, str]:
    """(source, rationale) of the first harness: the task's own file when task.toml names one, else the template."""
    path = task.default_harness_path()
    if path is not None:
        if not path.is_file():
            raise HarnessError(f"task {task.name!r} names harness {path}, which does not exist", "fix [harness] in task.toml")
        return path.read_text(encoding="utf-8"), f"task default harness {path.name}"
    return render(make_config(task.public_info())), "Meta-Agent template: task instruction, free generation, answer parsing"


def meta_prompt(task: Task, n_examples: int = 4) -> str:
    shown = [json.dumps({"example": e.visible(), "answer": e.target}, ensure_ascii=False)[:1500]
             for e in task.split("train")[:n_examples]]
    template, _ = initial_harness(task)
    return prompt("meta_task", task=json.dumps(task.public_info(), ensure_ascii=False, indent=1), harness_api=prompt("harness_api"),
                  examples="\n".join(shown), template=template)


def llm_initial_harness(task: Task, model, validate: Callable[[str, int], str | None], attempts: int = 3) -> tuple[str, str]:
    """(source, rationale): the model's harness once `validate` returns no error, else the template after `attempts` tries."""
    system = prompt("meta_system")
    messages = [{"role": "user", "content": meta_prompt(task)}]
    error = "no attempt made"
    for attempt in range(1, attempts + 1):
        reply = model.chat(system, messages)
        messages.append({"role": "assistant", "content": reply})
        blocks = FENCE_RE.findall(reply)
        if not blocks:
            error = "the reply has no ```python block"
        else:
            error = validate(max(blocks, key=len), attempt)
            if error is None:
                return max(blocks, key=len), f"Meta-Agent {model.spec.spelling}: written from the task description (attempt {attempt})"
        messages.append({"role": "user", "content": f"That harness cannot be used: {error}\nFix it and reply with the complete "
                                                    "file in one ```python block."})
    source, _ = initial_harness(task)
    return source, f"Meta-Agent template: the LLM's {attempts} harness(es) failed validation (last: {error[:300]})"
