"""Checks a proposed harness must pass before it runs: no hidden labels, no hard-coded answers, no escape.

An LLM that writes harness code can cheat, on purpose or not: read the task's
label file or the run store, paste validation answers into the code, or reach
the network. The gate would then measure the cheat. These checks read the
source (its syntax tree and string literals) and name what they found:

- **hidden data**: imports of sia's task, store or loop modules or of sqlite3,
  literals naming the task's data files, data folder or a run store, and
  attribute access to an example's `target`;
- **hard-coded answers**: literals holding a val or test example id, the text
  of a val or test input (24 characters or more that are not also in train),
  or a val or test answer that is not a public label;
- **escape from the sandbox**: imports of network, process or foreign-function
  modules (`socket`, `urllib`, `requests`, `subprocess`, `ctypes`, ...), and
  `os.system`/`os.popen`/`os.exec*`/`os.spawn*`, and `open()` of an absolute
  path or one that climbs out with `..`.

A simplification on purpose: the checks are static. Code that builds the
names at run time (`__import__("so" + "cket")`) passes them; the sandbox's
process isolation (see `sia.harness.sandbox`) is the second line, and the gate only
ever sees validation examples.
"""

from __future__ import annotations

import ast
import json
from typing import Any

from sia.task.loading import Task

NETWORK = {"socket", "ssl", "urllib", "urllib3", "http", "requests", "httpx", "httpx2", "aiohttp", "ftplib", "smtplib",
           "telnetlib", "websocket", "websockets", "openai", "anthropic", "paramiko"}
PROCESS = {"subprocess", "ctypes", "cffi", "multiprocessing", "pty", "signal", "resource"}
HIDDEN_MODULES = {"sia.task", "sia.store", "sia.loop", "sia.api", "sia.evaluation", "sia.agents", "sia.weights", "sia.policy", "sqlite3"}
OS_CALLS = {"system", "popen", "fork", "kill", "remove", "unlink", "rmdir", "removedirs", "chdir"}
MIN_TEXT = 24


def _literals(tree: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _target_strings(target: dict[str, Any]) -> list[str]:
    out = []
    for v in target.values():
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, list):
            out += [str(x) for x in v]
        elif v is not None:
            out.append(json.dumps(v, ensure_ascii=False))
    return out


def _imports(tree: ast.AST) -> list[tuple[str, int]]:
    found = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            found += [(a.name, n.lineno) for a in n.names]
        elif isinstance(n, ast.ImportFrom) and n.module:
            found += [(n.module, n.lineno)] + [(f"{n.module}.{a.name}", n.lineno) for a in n.names]
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "__import__" and n.args \
                and isinstance(n.args[0], ast.Constant) and isinstance(n.args[0].value, str):
            found.append((n.args[0].value, n.lineno))
    return found


def check_harness(source: str, task: Task) -> list[str]:
    """Reasons to refuse `source` before it runs; empty when it passes."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []  # a syntax error is reported by the compile check, with its line
    reasons: list[str] = []
    for name, line in _imports(tree):
        top = name.split(".")[0]
        if top in NETWORK:
            reasons.append(f"network access outside ctx.llm: imports {name} (line {line})")
        elif top in PROCESS:
            reasons.append(f"process or foreign-code access outside the sandbox: imports {name} (line {line})")
        elif name in HIDDEN_MODULES or any(name.startswith(m + ".") for m in HIDDEN_MODULES):
            reasons.append(f"reads hidden task data: imports {name} (line {line})")
    for n in ast.walk(tree):
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "os" and \
                (n.attr in OS_CALLS or n.attr.startswith(("exec", "spawn"))):
            reasons.append(f"process or filesystem access outside the sandbox: os.{n.attr} (line {n.lineno})")
        if isinstance(n, ast.Attribute) and n.attr == "target":
            reasons.append(f"reads an example's hidden target (.target, line {n.lineno})")
        if isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Constant) and n.slice.value == "target":
            reasons.append(f"reads an example's hidden target (['target'], line {n.lineno})")
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "open" and n.args \
                and isinstance(n.args[0], ast.Constant) and isinstance(n.args[0].value, str):
            path = n.args[0].value
            if path.startswith(("/", "~")) or ".." in path.replace("\\", "/").split("/"):
                reasons.append(f"filesystem access outside the sandbox: open({path!r}) (line {n.lineno})")
    reasons += _hidden_data(tree, task)
    return list(dict.fromkeys(reasons))


def _hidden_data(tree: ast.AST, task: Task) -> list[str]:
    reasons = []
    lits = _literals(tree)
    spec = task.spec
    names = {f for f in (spec.data.inputs, spec.data.labels, spec.labels_file) if f}
    folders = {str(task.data_dir), str(task.folder)}
    for lit in lits:
        for f in names:
            if f in lit:
                reasons.append(f"reads hidden task data: names the data file {f!r}")
        if any(d in lit for d in folders) or lit.endswith("sia.db"):
            reasons.append(f"reads hidden task data: names the task folder or a run store ({lit[:60]!r})")
    if not task.data_ready():
        return reasons
    public = {str(x) for x in task.labels}
    train_text = "\n".join(str(v) for e in task.split("train") for v in e.inputs.values())
    train_answers = {s for e in task.split("train") for s in _target_strings(e.target)}
    held = task.split("val") + task.split("test")
    ids = {e.id: e.split for e in held}
    answers = {s: e for e in held for s in _target_strings(e.target) if s not in public and s not in train_answers and len(s) >= 3}
    long_lits = [lit for lit in lits if len(lit) >= MIN_TEXT and lit not in train_text]
    for lit in lits:
        if lit in ids:
            reasons.append(f"hard-codes {ids[lit]} example id {lit!r}")
        if lit in answers:
            e = answers[lit]
            reasons.append(f"hard-codes the {e.split} answer of example {e.id} ({lit[:40]!r})")
    for e in held:
        text = "\n".join(str(v) for v in e.inputs.values())
        for lit in long_lits:
            if lit in text or (len(text) >= MIN_TEXT and text in lit):
                reasons.append(f"hard-codes the text of {e.split} example {e.id} ({lit[:40]!r}...)")
                break
    return reasons
