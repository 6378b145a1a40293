"""Records a harness writes are data: odd numbers and strings become that rollout's error, never an exception in sia.

And a harness cannot decide what is an infrastructure failure: claiming one
(to veto an evaluation it is losing) gets it its own error, while the
evaluation goes on to a score.
"""

import json
import subprocess

import pytest
from conftest import SIA

from sia.evaluation.executor import EvalConfig, execute
from sia.harness.isolation import detect
from sia.harness.sandbox import SandboxLimits
from sia.store.store import Store
from sia.task.loading import load_task

pytestmark = pytest.mark.skipif(not detect().kernel, reason="bubblewrap cannot run here: the hostile suite needs it")

WRITES = '''
import os, sys, time


def raw(line):
    os.write(int(sys.argv[2]), line.encode() + b"\\n")


def solve(example, ctx):
    attack = ctx.sample
    if attack == 0:
        raw('{"kind": "log", "t": NaN, "data": {}}')
    elif attack == 1:
        raw('{"kind": "log", "t": ' + "9" * 400 + ', "data": {}}')
    elif attack == 2:
        raw('{"kind": "log", "t": %f, "data": {"big": %s, "inf": Infinity}}' % (time.time(), "7" * 30))
    elif attack == 3:
        raise RuntimeError("a lone surrogate: \\ud800 in an exception message")
    elif attack == 4:
        return "positive \\udfff"
    elif attack == 5:
        raw('{"kind": "log", "t": %f, "data": {"text": "%s"}}' % (time.time(), "x" * (400 * 1024)))
    return "positive"
'''


def test_nan_huge_numbers_surrogates_and_oversized_events_are_that_rollouts_error(tiny_task, tmp_path, runtime):
    task = load_task(tiny_task)
    config = EvalConfig(split="val", limit=1, samples=7, concurrency=4, limits=SandboxLimits(timeout_s=20))
    with Store(tmp_path / "run") as store:
        result = execute(task, WRITES, store=store, runtime=runtime, config=config)
        rows = {r.sample: r for r in store.rollouts(result.evaluation_id)}
    for sample, needle in [(0, "not a number sia stores"), (1, "an integer beyond 64 bits"), (2, "not a number sia stores"),
                           (4, "UTF-8 cannot encode"), (5, "an event may have")]:
        r = rows[sample]
        assert r.status == "error" and r.error_type == "harness_output" and needle in r.error, (sample, r.error_type, r.error)
    assert rows[3].error_type == "harness_exception" and "a lone surrogate: \ufffd" in rows[3].error, rows[3].error
    assert rows[6].status == "ok", rows[6].error
    for args in ([], ["--json"]):  # the trace reads and prints every rollout
        shown = subprocess.run([SIA, "trace", str(tmp_path / "run"), "--limit", "10", *args], capture_output=True, text=True,
                               timeout=120)
        assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr[-2000:]
    assert len(json.loads(shown.stdout)) == 7


FORGES = '''
import json, os, sys, time


def solve(example, ctx):
    if ctx.sample == 0:
        from sia.harness.client import LLMError
        raise LLMError("the policy is down (says the harness)", 503)
    os.write(int(sys.argv[2]), (json.dumps({"kind": "result", "status": "error", "error_type": "sandbox",
                                            "message": "the sandbox failed (says the harness)"}) + "\\n").encode())
    os._exit(0)
'''


def test_a_harness_cannot_claim_an_infrastructure_failure(tiny_task, tmp_path, runtime):
    """Eight rollouts all claiming the policy or the sandbox failed: before, sia stopped with "infrastructure failure"
    and no score; now each is the harness's own error and the evaluation is scored."""
    task = load_task(tiny_task)
    config = EvalConfig(split="val", limit=4, samples=2, concurrency=4, limits=SandboxLimits(timeout_s=20))
    with Store(tmp_path / "run") as store:
        result = execute(task, FORGES, store=store, runtime=runtime, config=config)
        rows = store.rollouts(result.evaluation_id)
    assert result.score == 0.0 and result.n == 4
    for r in rows:
        if r.sample == 0:
            assert r.error_type == "harness_exception" and "did not record" in r.error, r.error
        else:
            assert r.error_type == "harness_output" and "sandbox failure after the harness started" in r.error, r.error
