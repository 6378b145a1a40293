"""Grades denoising of single-cell counts by molecular cross-validation against the half of the molecules the grader kept.

The output is either settings (a JSON object, see denoise.py) applied here
with `magic-impute`, or a program defining `denoise(counts)`, which runs in a
sandboxed worker (`sia.harness.programs`) that sees only the visible half.
Score: the relative improvement of the MCV loss over no denoising (can be
negative); the raw loss is in the feedback.
"""

from __future__ import annotations

import importlib.util
import re
import time
from pathlib import Path

import numpy as np

from sia.harness.programs import RUNNER_PRELUDE, ProgramWorker, WorkerError
from sia.task.graders import Grade, grader

HERE = Path(__file__).parent
RUNNER = RUNNER_PRELUDE + (HERE / "runner.py").read_text()
_spec = importlib.util.spec_from_file_location("sia_task_magic_denoise_core", HERE / "denoise.py")
denoise = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(denoise)
FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.S)


def _program(output: str) -> str | None:
    blocks = FENCE.findall(output)
    text = max(blocks, key=len) if blocks else output
    return text if "def denoise" in text else None


def _run_program(program: str, seen: np.ndarray, timeout_s: float) -> np.ndarray:
    """The program's denoised matrix; every step within `timeout_s` in all (loading included)."""
    end = time.monotonic() + timeout_s
    with ProgramWorker(RUNNER, {"program.py": program}) as worker:
        ready, _ = worker.call({"cmd": "ready"}, min(worker.startup_s, end - time.monotonic()))
        if not ready.get("ok"):
            raise WorkerError(str(ready.get("error")))
        inp, out = worker.put("in", seen.astype(np.int64).tobytes()), worker.out_path("out")
        reply, _ = worker.call({"cmd": "run", "in": inp, "out": out, "shape": list(seen.shape)}, end - time.monotonic())
        if not reply.get("ok"):
            raise WorkerError(str(reply.get("error")))
        raw = worker.take(out, seen.size * 8)
        if len(raw) != seen.size * 8:
            raise WorkerError("the worker answered without a whole output")
        return np.frombuffer(raw, dtype=np.float64).reshape(seen.shape)


@grader("held")
def grade(example, output, timeout_s: float = 120.0) -> Grade:
    seen = np.asarray(example.inputs["counts"], dtype=np.int64)
    held = np.asarray(example.target["held"], dtype=np.int64)
    if isinstance(output, str):
        program = _program(output)
        if program is None:
            return Grade(0.0, False, "neither settings (a JSON object) nor a program defining denoise(counts)", outcome="unparseable")
        try:
            y = _run_program(program, seen, timeout_s)
        except WorkerError as e:
            return Grade(0.0, False, f"the program failed: {e}", outcome="error")
        how = "program"
    else:
        try:
            settings = denoise.settings_of(output)
        except ValueError as e:
            return Grade(0.0, False, f"bad settings: {e}", outcome="unparseable")
        y = denoise.apply(settings, seen)
        how = ", ".join(f"{k}={v}" for k, v in settings.items())
    if not np.all(np.isfinite(y)):
        return Grade(0.0, False, "the denoised matrix has NaN or infinite values", outcome="wrong")
    score, loss, base = denoise.improvement(seen, y, held)
    return Grade(score, score > 0, f"MCV loss {loss:.4f} against {base:.4f} without denoising: {score:+.1%} ({how})",
                 outcome="" if score > 0 else "wrong")
