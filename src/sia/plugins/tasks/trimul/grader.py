"""Grades a TriMul kernel: correct on fresh inputs, then its speed against the reference, both timed from outside.

The program and the reference each run in a sandboxed worker
(`sia.harness.programs.ProgramWorker`), started in parallel. Inputs are drawn
with the example's secret seed (never shown to the harness) and handed over
one at a time, each only when its call starts, in a folder the worker cannot
write: a program sees no input before it is asked, and none twice.

1. Correctness: `checks` fresh inputs; the outputs must match the reference's
   within `rtol`/`atol` (GPU MODE's 2e-2), with no NaN.
2. Speed: rounds on fresh inputs, the program and the reference back to back
   (alternating which goes first): at least `reps`, and more, up to `max_reps`,
   until the reference has been timed for `min_timed_s` (short kernels need
   more rounds for the same precision). Each call is timed by the grader
   from sending the command to reading the answer, so a program cannot forge
   its time; every timed output is checked too, so caching across calls or
   answering before the work is done fails. On CUDA the worker's CUDA-event
   time is used, refused as forged when under half the grader's wall time.

Fair timing: both workers run on the same `threads` CPUs with `threads` threads
(a cpuset cgroup where sia can make one), and while one side is timed the
other is frozen (its cgroup's freezer, else SIGSTOP to its processes), so a
program's helper processes cannot slow the reference down. The CPU time each
side's cgroup used is measured beside the wall time, and the grade's note says
what was measured and how the two sides were pinned.

Score: the speedup, the median over rounds of the reference's time over the
program's time in the same round, if every output is right, else 0. Pairing
the two calls of a round cancels the drift of a shared machine's speed (here
the time of one call moved 4x within seconds, for both sides alike); a ratio
of medians over the whole grading did not, and two runs of the same program
differed by 20-40% on 2-5 ms calls. A call slower than `max_slowdown` times the
reference (at least 20 s) is a timeout and scores 0, and the whole grading of
one example ends at `wall_s`.
"""

from __future__ import annotations

import re
import statistics
import threading
import time
from pathlib import Path

import numpy as np

from sia.harness.programs import RUNNER_PRELUDE, ProgramWorker, WorkerError, pinned_cpus
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


class _Clock:
    """The grading's deadline: every call gets at most the time left."""

    def __init__(self, wall_s: float) -> None:
        self.wall_s, self.end = wall_s, time.monotonic() + wall_s

    def limit(self, want: float) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise WorkerError(f"no answer within the grading's {self.wall_s:g}s")
        return min(want, left)


def _run(worker: ProgramWorker, other: ProgramWorker, c, data_bytes: bytes, tag: str, timeout_s: float, cuda: bool):
    """One call with `other` frozen: hand over the input, time the call from here, read the output back as raw floats.
    (output, wall seconds, CPU seconds of the worker's cgroup or None)."""
    _, out_shape = INPUTS_NS["shapes"](c)
    inp, out_path = worker.put(f"in-{tag}", data_bytes), worker.out_path(f"out-{tag}")
    other.freeze()
    try:
        reply, seconds = worker.call({"cmd": "run", "config": c, "in": inp, "out": out_path}, timeout_s)
    finally:
        worker.drop(inp)
    if not reply.get("ok"):
        raise WorkerError(str(reply.get("error", "the call failed"))[:600])
    raw = worker.take(out_path, int(np.prod(out_shape)) * 4)
    out = np.frombuffer(raw, dtype=np.float32)
    ms = reply.get("cuda_ms")
    if cuda and isinstance(ms, (int, float)) and ms > 0:
        if ms / 1000 < 0.5 * seconds:
            raise WorkerError(f"the worker reported {ms:.2f} ms for a call that took {seconds * 1000:.1f} ms")
        seconds = ms / 1000
    return out, seconds, worker.last_cpu_s


@grader("seed")
def grade(example, output, rtol: float = 2e-2, atol: float = 2e-2, checks: int = 2, reps: int = 5,
          max_slowdown: float = 10.0, threads: int = 1, wall_s: float = 300.0, max_reps: int = 30,
          min_timed_s: float = 1.0) -> Grade:
    program = program_of(output)
    if program is None:
        return Grade(0.0, False, "no program defining custom_kernel(data) in the output", outcome="unparseable")
    import torch

    c, cuda = _config(example), torch.cuda.is_available()
    seed = int(example.target["seed"])
    cpus = pinned_cpus(threads)
    with _TIMING, ProgramWorker(RUNNER, {"program.py": REFERENCE, "inputs.py": INPUTS}, cpus=cpus, threads=threads) as ref, \
            ProgramWorker(RUNNER, {"program.py": program, "inputs.py": INPUTS}, cpus=cpus, threads=threads) as cand:
        clock = _Clock(wall_s)
        try:
            if not ref.call({"cmd": "ready"}, clock.limit(ref.startup_s))[0].get("ok"):
                raise RuntimeError("the reference worker failed to start")
            loaded = cand.call({"cmd": "ready"}, clock.limit(cand.startup_s))[0]
        except WorkerError as e:
            return Grade(0.0, False, f"the program did not load: {e}", outcome="error")
        if not loaded.get("ok"):
            return Grade(0.0, False, f"the program did not load: {loaded.get('error')}", outcome="error")
        times: dict[str, list[float]] = {"r": [], "c": []}
        cpu: dict[str, list[float]] = {"r": [], "c": []}
        ref_seen: list[float] = []
        try:
            k = 0
            while k < checks + reps or (k < checks + max_reps and sum(times["r"]) < min_timed_s):
                data = INPUTS_NS["flat"](INPUTS_NS["generate"](c, seed * 1000 + k))
                pair = [(ref, cand, "r"), (cand, ref, "c")] if k % 2 == 0 else [(cand, ref, "c"), (ref, cand, "r")]
                results = {}
                for worker, other, who in pair:
                    limit = 60.0 if who == "r" or not ref_seen else max(20.0, max_slowdown * max(ref_seen))
                    try:
                        results[who] = _run(worker, other, c, data, f"{k}", clock.limit(limit), cuda)
                        if who == "r":
                            ref_seen.append(results[who][1])
                    except WorkerError as e:
                        if who == "r":
                            raise
                        slow = "no answer" in str(e)
                        return Grade(0.0, False, f"{'too slow' if slow else 'failed'} on input {k + 1}: {e}",
                                     outcome="wrong" if slow else "error")
                (want, tr, cr), (got, tc, cc) = results["r"], results["c"]
                problem = _compare(got, want, rtol, atol)
                if problem:
                    return Grade(0.0, False, f"wrong output on input {k + 1}: {problem}", outcome="wrong")
                if k >= checks:
                    times["r"].append(tr)
                    times["c"].append(tc)
                    if cr is not None and cc is not None:
                        cpu["r"].append(cr)
                        cpu["c"].append(cc)
                k += 1
        except WorkerError as e:
            return Grade(0.0, False, f"the reference failed ({e}); the grading could not run", outcome="error")
        pinning = cand.pinning()
    speedup = statistics.median(r / max(c, 1e-9) for r, c in zip(times["r"], times["c"]))
    return Grade(speedup, speedup >= 1.0, f"correct; {speedup:.3f}x the reference ({_timing_note(times, cpu, cuda)}; {pinning})")


def _timing_note(times: dict[str, list[float]], cpu: dict[str, list[float]], cuda: bool) -> str:
    """What was measured: the rounds, the median wall (or CUDA-event) time of each side, and its cgroup's CPU time."""
    ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    note = (f"median of {len(times['r'])} paired rounds; {'CUDA-event' if cuda else 'wall'} {ms['c']:.2f} ms against "
            f"{ms['r']:.2f} ms")
    if cpu["c"]:
        cms = {k: statistics.median(v) * 1e3 for k, v in cpu.items()}
        note += f"; CPU {cms['c']:.2f} ms against {cms['r']:.2f} ms"
    return note


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
