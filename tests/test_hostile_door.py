"""The policy door has limits: one rollout's requests and connections cannot hurt another's, or outlive the rollout.

Harnesses below attack the door they share the model through: a request with
a field the engine chokes on, sent while other rollouts decode; a flood of
idle connections; a long request left running when the rollout ends; more
tokens than a rollout may spend. Each attack must stay the attacker's own
problem, and sia's resources must stay within stated bounds.
"""

import os
import threading
import time

import pytest

from sia.evaluation.executor import EvalConfig, execute
from sia.harness.isolation import detect
from sia.harness.sandbox import SandboxLimits
from sia.policy.batcher import Batcher
from sia.policy.local import GenRequest
from sia.store.store import Store
from sia.task.loading import load_task

pytestmark = pytest.mark.skipif(not detect().kernel, reason="bubblewrap cannot run here: the hostile suite needs it")


def _run(task_dir, tmp_path, runtime, source, limit=1, samples=1, concurrency=2):
    task = load_task(task_dir)
    config = EvalConfig(split="val", limit=limit, samples=samples, concurrency=concurrency, limits=SandboxLimits(timeout_s=30))
    with Store(tmp_path / "run") as store:
        result = execute(task, source, store=store, runtime=runtime, config=config)
        return result, {r.sample: r for r in store.rollouts(result.evaluation_id)}


BAD_SEED = '''
import time


def solve(example, ctx):
    if ctx.sample == 0:
        time.sleep(0.3)  # the others are decoding by now
        errors = []
        for _ in range(6):
            try:
                ctx.llm.chat("Say hi.", max_tokens=4, seed=-1)
            except Exception as e:
                errors.append(str(e))
            time.sleep(0.1)
        raise RuntimeError("refused: " + (errors[0] if errors else "nothing"))
    for _ in range(3):
        ctx.llm.chat("Write one long sentence about the sea.", max_tokens=24, temperature=0.0)
    return "positive"
'''


def test_a_bad_request_field_fails_only_its_own_request(tiny_task, tmp_path, runtime):
    """Before: `seed: -1` reached the engine inside a shared decode batch and failed every request in it."""
    _, rows = _run(tiny_task, tmp_path, runtime, BAD_SEED, samples=6, concurrency=6)
    for s in range(1, 6):
        assert rows[s].status == "ok", (s, rows[s].error)
    assert rows[0].error_type == "harness_exception" and "seed" in rows[0].error and "HTTP 400" in rows[0].error, rows[0].error


FLOOD = '''
import os, socket, time


def solve(example, ctx):
    if ctx.sample == 1:
        time.sleep(2.0)  # while the flood holds its connections
        return ctx.llm.chat("Is 'a fine film' positive or negative? One word.", max_tokens=3).text
    kids = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:
            held = []
            for _ in range(240):
                s = socket.socket(socket.AF_UNIX)
                s.settimeout(1.0)
                try:
                    s.connect(ctx.llm._unix)
                    held.append(s)
                except OSError:
                    pass
            time.sleep(5)
            os._exit(0)
        kids.append(pid)
    time.sleep(4)
    return "positive"
'''


def test_a_connection_flood_is_capped_per_rollout_and_others_are_served(tiny_task, tmp_path, runtime):
    """960 connections from one rollout. Before: each was accepted and held by sia (4,097 open files in one run)."""
    cap = runtime.service.limits.max_connections if hasattr(runtime.service, "limits") else 8
    concurrency = 2
    # per running rollout: 3 per relayed connection, its socket, its sandbox's pipe and logs; and the run store's files
    bound = concurrency * (3 * cap + 8) + 16
    baseline = len(os.listdir("/proc/self/fd"))
    peak, stop = [baseline], threading.Event()

    def watch():
        while not stop.is_set():
            peak.append(len(os.listdir("/proc/self/fd")))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        _, rows = _run(tiny_task, tmp_path, runtime, FLOOD, samples=2, concurrency=concurrency)
    finally:
        stop.set()
        watcher.join()
    print(f"open files: {baseline} before, at most {max(peak)} during the flood (bound {baseline + bound})")
    assert max(peak) - baseline <= bound, f"sia held {max(peak) - baseline} more files during the flood (bound {bound})"
    assert rows[0].status == "ok" and rows[1].status == "ok", (rows[0].error, rows[1].error)
    door = runtime.service.open_door("r-after-flood", runtime.model_name())  # and the door serves a fresh request
    try:
        from sia.harness.client import LLMClient

        client = LLMClient("http://sia/v1", door.model, api_key=door.token, unix_socket=door.socket)
        assert client.chat("Say yes.", max_tokens=2).text is not None
    finally:
        runtime.service.close_door(door)
    assert len(os.listdir("/proc/self/fd")) - baseline <= 4


LINGER = '''
import json, socket, time


def solve(example, ctx):
    body = json.dumps({"model": ctx.llm.model, "max_tokens": 3000, "temperature": 0,
                       "prompt": "Numbers: " + ", ".join(str(i) for i in range(1, 21)) + ","}).encode()
    s = socket.socket(socket.AF_UNIX)
    s.connect(ctx.llm._unix)
    s.sendall(b"POST /v1/completions HTTP/1.1\\r\\nHost: sia\\r\\nContent-Type: application/json\\r\\n"
              + ("Authorization: " + ctx.llm._headers["Authorization"]).encode()
              + b"\\r\\nContent-Length: " + str(len(body)).encode() + b"\\r\\n\\r\\n" + body)
    time.sleep(1.0)  # the request is decoding now; the rollout leaves without waiting for it
    return "positive"
'''


def test_a_request_left_running_is_cancelled_when_its_rollout_ends(tiny_task, tmp_path, runtime):
    """Before: a dead rollout's 3,000-token request kept the model busy for the evaluations that followed."""
    _, rows = _run(tiny_task, tmp_path, runtime, LINGER)
    assert rows[0].status == "ok", rows[0].error
    policy = runtime.service.backend.policy
    time.sleep(1.0)
    before = policy.forward_passes
    time.sleep(1.5)
    assert policy.forward_passes == before, "the model is still decoding for a rollout that has ended"


SPENDER = '''
def solve(example, ctx):
    for i in range(50):
        try:
            ctx.llm.chat(f"Say a number: {i}", max_tokens=40)
        except Exception as e:
            raise RuntimeError(f"after {i} requests: {e}")
    return "positive"
'''


def test_a_rollout_cannot_spend_more_than_its_tokens(tiny_task, tmp_path, runtime, monkeypatch):
    from sia.policy.service import DoorLimits

    monkeypatch.setattr(runtime.service, "limits", DoorLimits(max_tokens=120))
    task = load_task(tiny_task)
    with Store(tmp_path / "run") as store:
        result = execute(task, SPENDER, store=store, runtime=runtime, config=EvalConfig(split="val", limit=1))
        row = store.rollouts(result.evaluation_id)[0]
        calls = [e for e in store.events(row.id) if e.kind == "llm_call"]
    assert row.error_type == "harness_exception" and "spent its 120 tokens" in row.error, row.error
    completion = sum(len(c.data["completions"][0]["token_ids"]) for c in calls)
    assert 1 <= len(calls) <= 3 and completion <= 120, (len(calls), completion)


def test_requests_past_a_rollouts_concurrency_are_answered_429(runtime, monkeypatch):
    from sia.harness.client import LLMClient, LLMError
    from sia.policy.service import DoorLimits

    monkeypatch.setattr(runtime.service, "limits", DoorLimits(max_concurrent=1))
    door = runtime.service.open_door("r-concurrency", runtime.model_name())
    statuses = []

    def one(i):
        client = LLMClient("http://sia/v1", door.model, api_key=door.token, unix_socket=door.socket, retries=0)
        try:
            client.chat(f"Count to {i + 5}.", max_tokens=16)
            statuses.append(200)
        except LLMError as e:
            statuses.append(429 if "429" in str(e) else str(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    record = runtime.service.close_door(door)
    assert statuses.count(200) >= 1 and statuses.count(429) >= 1 and set(statuses) <= {200, 429}, statuses
    assert record.refused == statuses.count(429)


@pytest.mark.parametrize("engine", ["runtime", "hf_runtime"])
@pytest.mark.model
def test_a_request_that_cannot_be_admitted_fails_alone_and_the_engine_gets_everything_back(engine, request):
    """A prompt longer than the context joins a session that is decoding another request. Before: the whole session
    failed and, on llama.cpp, the rows it held kept their sequences and KV cells."""
    policy = request.getfixturevalue(engine).service.backend.policy
    held = lambda: (getattr(policy, "cells", 0), sorted(getattr(policy, "free_seqs", [])))  # noqa: E731
    before = held()
    batcher = Batcher(lambda *a: [], max_batch=8, open_session=policy.session)
    try:
        prompt = policy.encode(policy.render_chat([{"role": "user", "content": "Count from one to fifty in words."}]))
        good = batcher.submit("generate", "base", [GenRequest(prompt, max_tokens=48)])
        time.sleep(0.3)  # the good request is decoding
        bad = batcher.submit("generate", "base", [GenRequest([1] * (policy.config.max_context + 8), max_tokens=4)])
        with pytest.raises(Exception, match="does not fit"):
            bad.result(timeout=60)
        assert len(good.result(timeout=120)[0].token_ids) > 0
        cancelled = batcher.submit("generate", "base", [GenRequest(prompt, max_tokens=400)], owner="r-gone")
        time.sleep(0.3)
        assert batcher.cancel("r-gone") == 1
        with pytest.raises(Exception, match="cancelled"):
            cancelled.result(timeout=10)
        deadline = time.monotonic() + 10
        while batcher.active_rows() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        batcher.close()
    assert batcher.active_rows() == 0 and held() == before
