"""Hostile harnesses are contained and recorded; the evaluation always completes."""

import pytest

from sia.evaluation.executor import EvalConfig, execute
from sia.harness.sandbox import SandboxLimits
from sia.store.store import Store
from sia.task.loading import load_task

HOSTILE = {
    "infinite_loop": ("def solve(example, ctx):\n    while True:\n        pass\n", "timeout"),
    "memory_bomb": ("def solve(example, ctx):\n    hog = []\n    while True:\n        hog.append(bytearray(50 * 1024 * 1024))\n", "memory"),
    "sys_exit": ("import sys\ndef solve(example, ctx):\n    sys.exit(3)\n", "harness_exit"),
    "exception": ("def solve(example, ctx):\n    raise ValueError('boom')\n", "harness_exception"),
    "wrong_type": ("def solve(example, ctx):\n    return 42\n", "harness_output"),
    "huge_stdout": ("def solve(example, ctx):\n    while True:\n        print('x' * 100000)\n", "harness_exception"),
    "os_exit": ("import os\ndef solve(example, ctx):\n    os._exit(0)\n", "crash"),
    "no_solve": ("x = 1\n", "harness_interface"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_harness_is_recorded_as_failed_rollout(name, tiny_task, tmp_path, runtime):
    source, expected = HOSTILE[name]
    task = load_task(tiny_task)
    limits = SandboxLimits(timeout_s=4, memory_mb=512, file_mb=2)
    config = EvalConfig(split="val", limit=2, concurrency=2, limits=limits)
    with Store(tmp_path / "run") as store:
        if name == "no_solve":
            # refused before running; the loop records such a proposal as a rejected candidate
            from sia.errors import HarnessError

            with pytest.raises(HarnessError, match="solve"):
                execute(task, source, store=store, runtime=runtime, config=config)
            return
        result = execute(task, source, store=store, runtime=runtime, config=config)
        rows = store.rollouts(result.evaluation_id)
    assert result.rollouts == 2 and result.score == 0.0
    assert {r.error_type for r in rows} == {expected}, [r.error for r in rows]
    for r in rows:
        assert r.status == "error" and r.error
    if name == "huge_stdout":
        assert "File too large" in rows[0].error
    if name == "infinite_loop":
        assert result.duration_s < 30


def test_good_harness_after_hostile_ones_still_works(tiny_task, tmp_path, runtime):
    task = load_task(tiny_task)
    source = "def solve(example, ctx):\n    ctx.log('hello', n=1)\n    return ctx.tools.call('upper', str.lower, 'POSITIVE')\n"
    with Store(tmp_path / "run") as store:
        result = execute(task, source, store=store, runtime=runtime, config=EvalConfig(split="val", concurrency=4))
        kinds = [e.kind for e in store.events(store.rollouts(result.evaluation_id)[0].id)]
    assert result.rollouts == 4 and 0.0 < result.score < 1.0
    assert kinds == ["log", "tool_call", "output", "grade"]
