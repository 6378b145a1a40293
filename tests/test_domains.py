"""The kernel and denoising domains: graders that measure real work and cannot be fooled, and the template harness on them."""

import json
import subprocess

import pytest
from conftest import SIA

from sia.task.loading import load_task

CACHED = '''import torch
_seen = {}


def custom_kernel(data):
    x, mask, w, config = data
    if "out" in _seen:  # every later call returns the first call's output
        return _seen["out"]
    from torch.nn import functional as F
    x = F.layer_norm(x, (config["dim"],), w["norm.weight"], w["norm.bias"])
    m = mask.unsqueeze(-1)
    left = F.linear(x, w["left_proj.weight"]) * m * torch.sigmoid(F.linear(x, w["left_gate.weight"]))
    right = F.linear(x, w["right_proj.weight"]) * m * torch.sigmoid(F.linear(x, w["right_gate.weight"]))
    out = torch.einsum("bikh,bjkh->bijh", left, right)
    out = F.layer_norm(out, (config["hidden_dim"],), w["to_out_norm.weight"], w["to_out_norm.bias"])
    _seen["out"] = F.linear(out * torch.sigmoid(F.linear(x, w["out_gate.weight"])), w["to_out.weight"])
    return _seen["out"]
'''

READS_REFERENCE = '''import glob, numpy as np, torch


def custom_kernel(data):
    for pattern in ("/io/out-*.bin", "/tmp/sia-program-*/io/out-*.bin", "/tmp/*/out-*.bin", "/sandbox/*.bin"):
        for path in glob.glob(pattern):
            return torch.from_numpy(np.fromfile(path, dtype=np.float32)).reshape(data[0].shape)
    raise RuntimeError("no reference output to copy")
'''

FORGES_TIMING = '''import __main__, time, torch
time.perf_counter = lambda: 0.0


def custom_kernel(data):
    __main__.reply(ok=True, cuda_ms=0.001)  # claim to be done at once, before any work
    return torch.zeros(data[0].shape)
'''


def test_sia_tasks_lists_the_new_domains():
    r = subprocess.run([SIA, "tasks", "--json"], capture_output=True, text=True, timeout=120)
    rows = {x["name"]: x for x in json.loads(r.stdout)}
    assert rows["trimul"]["sizes"] == {"train": 30, "val": 15, "test": 15} and rows["trimul"]["output"] == "program"
    assert rows["magic-denoise"]["sizes"] == {"train": 24, "val": 16, "test": 16} and rows["magic-denoise"]["output"] == "json"


def test_trimul_the_reference_scores_about_one_and_cheats_score_zero():
    task = load_task("trimul")
    ex = min(task.split("val"), key=lambda e: e.inputs["config"]["seqlen"] * e.inputs["config"]["dim"])
    reference = (task.folder / "reference.py").read_text()
    grade = lambda out: task.grader.func(ex, out, **{**task.grader.keywords, "reps": 3})  # noqa: E731 (fewer timed runs)
    g = grade(f"Here is my kernel:\n```python\n{reference}```\n")
    assert g.feedback.startswith("correct") and 0.5 < g.score < 2.0, g.feedback
    for name, program in [("cached", CACHED), ("reads the reference", READS_REFERENCE), ("forges timing", FORGES_TIMING)]:
        g = grade(program)
        assert g.score == 0.0 and not g.passed, (name, g.feedback)
    assert task.grade(ex, "I cannot write kernels.").outcome == "unparseable"


def test_magic_default_settings_improve_and_a_program_runs_in_the_sandbox():
    task = load_task("magic-denoise")
    ex = task.split("val")[0]
    default = task.grade(ex, {"method": "magic"})
    assert default.score > 0.1 and "MCV loss" in default.feedback, default.feedback
    assert task.grade(ex, {"method": "none"}).score == pytest.approx(0.0)
    assert task.grade(ex, {"knn": -3}).outcome == "unparseable"
    smooth = ("import numpy as np\n\ndef denoise(counts):\n"
              "    return counts.mean(0, keepdims=True) * counts.sum(1, keepdims=True) / counts.sum()\n")
    g = task.grade(ex, smooth)
    assert g.feedback.startswith("MCV loss") and g.score != 0.0, g.feedback
    peek = "def denoise(counts):\n    return open('/root/.cache/sia/tasks/magic-denoise/labels.jsonl').read()\n"
    assert task.grade(ex, peek).outcome == "error"


def test_the_template_harness_on_settings_falls_back_and_searches_with_the_public_helper(tmp_path, runtime):
    from dataclasses import replace

    from sia.evaluation.executor import EvalConfig, execute
    from sia.harness.template import make_config, render
    from sia.store.store import Store

    task = load_task("magic-denoise")
    cfg = make_config(task.public_info(), max_tokens=8)  # eight tokens: no settings can be read from the reply
    with Store(tmp_path / "run") as store:
        plain = execute(task, render(cfg), store=store, runtime=runtime, config=EvalConfig(split="val", limit=2))
        tuned = execute(
            task,
            render(replace(cfg, fallback=True, check=True, search=4)),
            store=store,
            runtime=runtime,
            config=EvalConfig(split="val", limit=2),
        )
    assert plain.score == 0.0, "nothing could be read, and nothing to fall back on"
    assert tuned.score > 0.1, tuned.failures
