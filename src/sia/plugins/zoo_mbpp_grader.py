"""Grades an MBPP solution by running it and the example's tests in sia's sandbox (a zoo task's grader, built by `make zoo`).

The program runs in a `sia.harness.programs.ProgramWorker`: no network, no
labels, rollout-wide limits. Each test `assert CALL == LITERAL` is split: the
worker computes CALL and returns its value only if it is built of plain types
(int, float, bool, str, None, and lists, tuples, dicts and sets of them, read
through the builtin types' own methods), and the grader rebuilds it from
builtins and compares it with LITERAL itself. A program can
therefore not pass a test with an object whose `__eq__` always says yes. A test
of another shape runs whole in the worker (weaker: noted in the feedback).

Score: the share of the tests passed (all three for a pass).
"""

from __future__ import annotations

import ast
import re
import time

from sia.harness.programs import RUNNER_PRELUDE, ProgramWorker, WorkerError
from sia.task.graders import Grade, grader

FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.S)
RUNNER = (
    RUNNER_PRELUDE
    + '''
import traceback

PLAIN = (int, float, bool, str, type(None))


def plain(v, depth=0):
    """The value as JSON-able data built from builtins, tagged by kind (subclasses such as Counter or OrderedDict are read
    through the builtin methods); ValueError for anything else."""
    if depth > 20:
        raise ValueError("nested too deeply")
    if isinstance(v, bool):
        return ["bool", bool(v)]
    if isinstance(v, int):  # as text: an integer of any length passes sia's checks on answers (64 bits at most)
        return ["int", int.__repr__(v)]
    if isinstance(v, float):
        x = float.__float__(v)
        return ["float", x if x == x else "nan"]
    if isinstance(v, str) or v is None:
        return ["str", str.__str__(v)] if v is not None else ["NoneType", None]
    if isinstance(v, (list, tuple)):
        items = tuple.__iter__(v) if isinstance(v, tuple) else list.__iter__(v)
        return ["tuple" if isinstance(v, tuple) else "list", [plain(x, depth + 1) for x in items]]
    if isinstance(v, (set, frozenset)):
        items = frozenset.__iter__(v) if isinstance(v, frozenset) else set.__iter__(v)
        return ["set", sorted((plain(x, depth + 1) for x in items), key=repr)]
    if isinstance(v, dict):
        return ["dict", sorted(([plain(k, depth + 1), plain(x, depth + 1)] for k, x in dict.items(v)), key=repr)]
    raise ValueError(f"a value of type {type(v).__name__}")


ns = {"__name__": "solution"}
for cmd in commands():
    try:
        if cmd["cmd"] == "load":
            exec(compile(open(os.path.join(IN, "program.py")).read(), "solution.py", "exec"), ns)
            exec(compile(cmd.get("setup", ""), "setup.py", "exec"), ns)  # the tests' fixtures, which may use the program
            reply(ok=True)
        elif cmd["cmd"] == "value":
            reply(ok=True, value=plain(eval(compile(cmd["expr"], "test.py", "eval"), ns)))
        elif cmd["cmd"] == "exec":
            exec(compile(cmd["code"], "test.py", "exec"), ns)
            reply(ok=True)
    except BaseException as e:
        reply(ok=False, error=f"{type(e).__name__}: {str(e)[:300]}")
'''
)


def program_of(output) -> str | None:
    if not isinstance(output, str):
        return None
    blocks = FENCE.findall(output)
    text = max(blocks, key=len) if blocks else output
    return text if "def " in text else None


def _build(tagged):
    """The runner's tagged value as the grader's own Python object (builtins only, so `==` is Python's)."""
    kind, v = tagged
    if kind == "int":
        return int(v)
    if kind == "float" and v == "nan":
        return float("nan")
    if kind in ("float", "bool", "str", "NoneType"):
        return v
    if kind == "list":
        return [_build(x) for x in v]
    if kind == "tuple":
        return tuple(_build(x) for x in v)
    if kind == "set":
        return {_build(x) for x in v}
    if kind == "dict":
        return {_build(k): _build(x) for k, x in v}
    raise ValueError(f"unknown kind {kind!r}")


def _split(test: str):
    """(call source, expected literal) for `assert CALL == LITERAL`, else None."""
    try:
        node = ast.parse(test.strip()).body[0]
        if (
            isinstance(node, ast.Assert)
            and isinstance(node.test, ast.Compare)
            and len(node.test.ops) == 1
            and isinstance(node.test.ops[0], ast.Eq)
        ):
            return ast.unparse(node.test.left), ast.literal_eval(node.test.comparators[0])
    except (SyntaxError, ValueError, IndexError, TypeError):
        return None
    return None


@grader("tests", gold=lambda ex: ex.target["solution"])
def grade(example, output, timeout_s: float = 20.0) -> Grade:
    program = program_of(output)
    if program is None:
        return Grade(0.0, False, "no Python function in the output", outcome="unparseable")
    tests = list(example.target["tests"])
    end = time.monotonic() + timeout_s
    passed, notes = 0, []
    try:
        with ProgramWorker(RUNNER, {"program.py": program}) as w:
            loaded, _ = w.call({"cmd": "load", "setup": example.target.get("setup", "")}, max(0.1, end - time.monotonic()))
            if not loaded.get("ok"):
                return Grade(0.0, False, f"the program does not load: {loaded.get('error')}", outcome="error")
            for i, test in enumerate(tests):
                split = _split(test)
                if split is not None:
                    reply, _ = w.call({"cmd": "value", "expr": split[0]}, max(0.1, end - time.monotonic()))
                    try:
                        ok = bool(reply.get("ok")) and _build(reply["value"]) == split[1]
                    except (KeyError, TypeError, ValueError):  # an answer that is not a tagged value
                        ok = False
                    why = reply.get("error") or f"got {str(reply.get('value'))[:80]}"
                else:
                    reply, _ = w.call({"cmd": "exec", "code": test}, max(0.1, end - time.monotonic()))
                    ok, why = bool(reply.get("ok")), f"{reply.get('error')} (run whole in the sandbox)"
                passed += ok
                if not ok:
                    notes.append(f"test {i + 1} failed: {why}")
    except WorkerError as e:
        notes.append(f"stopped: {e}")
    score = passed / len(tests) if tests else 0.0
    outcome = "" if score == 1.0 else "wrong"
    return Grade(
        score, score == 1.0, f"{passed} of {len(tests)} tests passed" + ("; " + "; ".join(notes)[:400] if notes else ""), outcome=outcome
    )
