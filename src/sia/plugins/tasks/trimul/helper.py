"""Public helpers for TriMul harnesses (given to every harness as ctx.task["files"], with reference.py and inputs.py).

- `baseline(example)`: the reference program, a correct output to fall back on;
- `check(example, output, seed)`: runs a program in the harness's own process
  against the reference on inputs the harness draws itself (not the grader's),
  and times both; `score` is the local speedup, 0 when wrong or broken;
- `describe(example)`: the configuration and the interface, for a prompt.
"""

import re
import statistics
import time
import traceback

import inputs
import reference

FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.S)
with open(reference.__file__) as _f:
    REFERENCE = _f.read()


def program_of(output):
    if not isinstance(output, str):
        return None
    blocks = FENCE.findall(output)
    text = max(blocks, key=len) if blocks else output
    return text if "custom_kernel" in text else None


def baseline(example):
    return REFERENCE


def describe(example):
    c = example["config"]
    return (f"Configuration: batch {c['bs']}, sequence length {c['seqlen']}, dim {c['dim']}, hidden dim {c['hiddendim']}, "
            f"{'no mask' if c['nomask'] else 'random 0/1 mask'}, {c['distribution']} inputs.\n"
            "Write a faster drop-in replacement for this reference (same interface, float32 CPU tensors, "
            "results within 2e-2):\n```python\n" + REFERENCE + "```")


def check(example, output, seed=0, reps=3):
    """{"ok", "error", "score"}: correct against the reference on the harness's own inputs, and the local speedup."""
    import torch

    program = program_of(output)
    if program is None:
        return {"ok": False, "error": "no program defining custom_kernel", "score": 0.0}
    namespace = {"__name__": "candidate"}
    try:
        exec(compile(program, "candidate.py", "exec"), namespace)
        kernel = namespace["custom_kernel"]
    except BaseException as e:
        return {"ok": False, "error": f"the program does not load: {type(e).__name__}: {e}", "score": 0.0}
    small = dict(example["config"], bs=1, seqlen=min(16, example["config"]["seqlen"]))
    times_ref, times_cand = [], []
    for k, c in enumerate([small, example["config"]] + [example["config"]] * reps):
        data = inputs.generate(c, 7919 * (seed + 1) + k)
        try:
            t0 = time.perf_counter()
            got = kernel(data)
            t1 = time.perf_counter()
        except BaseException as e:
            return {"ok": False, "error": f"custom_kernel raised {type(e).__name__}: {e}\n{traceback.format_exc(limit=2)[-600:]}",
                    "score": 0.0}
        want = reference.custom_kernel(data)
        t2 = time.perf_counter()
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            return {"ok": False, "error": f"custom_kernel returned {getattr(got, 'shape', type(got).__name__)}, expected a tensor "
                                          f"of shape {tuple(want.shape)}", "score": 0.0}
        if not torch.allclose(got.float(), want, rtol=2e-2, atol=2e-2):
            err = float((got.float() - want).abs().max())
            return {"ok": False, "error": f"wrong result (max abs error {err:.3g}, tolerance 2e-2)", "score": 0.0}
        if k >= 2:
            times_cand.append(t1 - t0)
            times_ref.append(t2 - t1)
    speedup = statistics.median(times_ref) / max(statistics.median(times_cand), 1e-9)
    return {"ok": True, "error": "", "score": speedup}
