"""Grades a TriMul kernel: correct on fresh inputs, then its speed against the reference, both timed from outside.

The program and the reference each run in a sandboxed worker
(`sia.harness.programs.ProgramWorker`), started in parallel. Inputs are drawn
with the example's secret seed (never shown to the harness) and handed over
one at a time, each only when its call starts: a program sees no input before
it is asked, and none twice.

1. Correctness: `checks` fresh inputs; the outputs must match the reference's
   within `rtol`/`atol` (GPU MODE's 2e-2), with no NaN.
2. Speed: `reps` rounds, each on a fresh input, the program and the reference
   interleaved (alternating which goes first). Each call is timed by the grader
   from sending the command to reading the answer, so a program cannot forge
   its time; every timed output is checked too, so caching across calls or
   answering before the work is done fails. On CUDA the worker's CUDA-event
   time is used, refused as forged when under half the grader's wall time.

Score: the median reference time over the median program time (the speedup)
if every output is right, else 0. A call slower than `max_slowdown` times the
reference (at least 20 s) is a timeout and scores 0.
"""

from __future__ import annotations

import re
import statistics
import threading
from pathlib import Path

import numpy as np

from sia.harness.programs import RUNNER_PRELUDE, ProgramWorker, WorkerError
from sia.task.graders import Grade, grader

HERE = Path(__file__).parent
REFERENCE = (HERE / "reference.py").read_text()
INPUTS = (HERE / "inputs.py").read_text()
RUNNER = RUNNER_PRELUDE + (HERE / "runner.py").read_text()
INPUTS_NS: dict = {}
exec(compile(INPUTS, str(HERE / "inputs.py"), "exec"), INPUTS_NS)  # the grader's own copy of the input generator
_TIMING = threading.Lock()  # one grading at a time: timings of two gradings would disturb each other
FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.S)


def program_of(output) -> str | None:
    """The program in an output: the whole text, or the largest fenced Python block in it."""
    if not isinstance(output, str):
        return None
    blocks = FENCE.findall(output)
    text = max(blocks, key=len) if blocks else output
    return text if "custom_kernel" in text else None


def _config(example) -> dict:
    """The example's CPU configuration, or its leaderboard configuration where CUDA is present."""
    import torch

    return dict(example.inputs["cuda_config"] if torch.cuda.is_available() else example.inputs["config"])


def _run(worker: ProgramWorker, c, data_bytes: bytes, tag: str, timeout_s: float, cuda: bool):
    """One call: hand over the input, time the call from here, read the output back as raw floats."""
    inp, out_path = worker.path(f"in-{tag}.bin"), worker.path(f"out-{tag}.bin")
    inp.write_bytes(data_bytes)
    reply, seconds = worker.call({"cmd": "run", "config": c, "in": f"/io/in-{tag}.bin", "out": f"/io/out-{tag}.bin"}, timeout_s)
    inp.unlink(missing_ok=True)
    if not reply.get("ok"):
        raise WorkerError(str(reply.get("error", "the call failed"))[:600])
    try:
        out = np.fromfile(out_path, dtype=np.float32)
    except (OSError, ValueError):
        raise WorkerError("the worker answered before writing its output") from None
    out_path.unlink(missing_ok=True)
    ms = reply.get("cuda_ms")
    if cuda and isinstance(ms, (int, float)) and ms > 0:
        if ms / 1000 < 0.5 * seconds:
            raise WorkerError(f"the worker reported {ms:.2f} ms for a call that took {seconds * 1000:.1f} ms")
        seconds = ms / 1000
    return out, seconds


@grader("seed")
def grade(example, output, rtol: float = 2e-2, atol: float = 2e-2, checks: int = 2, reps: int = 5,
          max_slowdown: float = 10.0) -> Grade:
    program = program_of(output)
    if program is None:
        return Grade(0.0, False, "no program defining custom_kernel(data) in the output", outcome="unparseable")
    import torch

    c, cuda = _config(example), torch.cuda.is_available()
    seed = int(example.target["seed"])
    with _TIMING, ProgramWorker(RUNNER, {"program.py": REFERENCE, "inputs.py": INPUTS}) as ref, \
            ProgramWorker(RUNNER, {"program.py": program, "inputs.py": INPUTS}) as cand:
        try:
            if not ref.ready().get("ok"):
                raise RuntimeError("the reference worker failed to start")
            loaded = cand.ready()
        except WorkerError as e:
            return Grade(0.0, False, f"the program did not load: {e}", outcome="error")
        if not loaded.get("ok"):
            return Grade(0.0, False, f"the program did not load: {loaded.get('error')}", outcome="error")
        times_ref, times_cand, ref_seen = [], [], []
        try:
            for k in range(checks + reps):
                data = INPUTS_NS["flat"](INPUTS_NS["generate"](c, seed * 1000 + k))
                pair = [(ref, "r"), (cand, "c")] if k % 2 == 0 else [(cand, "c"), (ref, "r")]
                results = {}
                for worker, who in pair:
                    limit = 60.0 if who == "r" or not ref_seen else max(20.0, max_slowdown * max(ref_seen))
                    try:
                        results[who] = _run(worker, c, data, f"{k}", limit, cuda)
                        if who == "r":
                            ref_seen.append(results[who][1])
                    except WorkerError as e:
                        if who == "r":
                            raise
                        slow = "no answer" in str(e)
                        return Grade(0.0, False, f"{'too slow' if slow else 'failed'} on input {k + 1}: {e}",
                                     outcome="wrong" if slow else "error")
                (want, tr), (got, tc) = results["r"], results["c"]
                problem = _compare(got, want, rtol, atol)
                if problem:
                    return Grade(0.0, False, f"wrong output on input {k + 1}: {problem}", outcome="wrong")
                if k >= checks:
                    times_ref.append(tr)
                    times_cand.append(tc)
        except WorkerError as e:
            return Grade(0.0, False, f"the reference failed ({e}); the grading could not run", outcome="error")
    speedup = statistics.median(times_ref) / max(statistics.median(times_cand), 1e-9)
    return Grade(speedup, speedup >= 1.0, f"correct; {speedup:.3f}x the reference (median {statistics.median(times_cand) * 1e3:.2f} ms "
                                          f"against {statistics.median(times_ref) * 1e3:.2f} ms, {reps} timed runs)")


def _compare(got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> str | None:
    if got.shape != want.shape:
        return f"{got.size} values, expected {want.size}"
    if not np.all(np.isfinite(got)):
        return "NaN or infinite values"
    err = np.abs(got - want)
    bad = err > atol + rtol * np.abs(want)
    if bad.any():
        return f"{int(bad.sum())} of {got.size} values off by more than the tolerance (max error {float(err.max()):.3g})"
    return None
