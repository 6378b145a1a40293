"""Hostile programs on a program task: the files a grader shares with a submitted kernel cannot be turned against sia.

Each program below computes the right answer, so the grading goes on through
every input, and meanwhile tries one way to make sia (root, on the host) write
where it should not, or wait forever. A pass means: the grading ended within
its limits, the attack is the program's failure or changes nothing, and no
host file was touched. No model is loaded.
"""

import time

import pytest

from sia.harness.isolation import detect
from sia.task.loading import load_task

pytestmark = pytest.mark.skipif(not detect().kernel, reason="bubblewrap cannot run here: the hostile suite needs it")


def _smallest(task):
    return min(task.split("val"), key=lambda e: e.inputs["config"]["seqlen"] * e.inputs["config"]["dim"])


def _grade(task, program, **options):
    """Grade `program` on the smallest example, with few timed rounds; (grade, seconds)."""
    import inspect

    ex = _smallest(task)
    known = inspect.signature(task.grader.func).parameters
    options = {k: v for k, v in {**task.grader.keywords, "reps": 2, "max_reps": 2, **options}.items() if k in known}
    t0 = time.monotonic()
    g = task.grader.func(ex, program, **options)
    return g, time.monotonic() - t0


def test_symlinks_planted_for_inputs_and_outputs_never_make_sia_write_a_host_file(tmp_path):
    """The program plants symlinks to a host file under every name sia might use for its next inputs and outputs, and
    tries to write into its input folder. Inputs go to a read-only folder under fresh names; outputs are read without
    following a link. Before: sia wrote the next input through the link, as root, truncating the host file."""
    task = load_task("trimul")
    canary = tmp_path / "canary.txt"
    canary.write_text("host file: must stay as it is\n")
    before = canary.stat()
    program = (task.folder / "reference.py").read_text() + f'''

import os

for folder in ("/io", "/in", os.environ.get("SIA_IO", ""), os.environ.get("SIA_IN", "")):
    for k in range(40):
        for name in (f"in-{{k}}.bin", f"out-{{k}}.bin"):
            try:
                os.symlink({str(canary)!r}, os.path.join(folder, name))
            except OSError:
                pass
try:
    open(os.path.join(os.environ.get("SIA_IN", "/in"), "mine.bin"), "wb").close()
    WROTE_INPUTS = True
except OSError:
    WROTE_INPUTS = False

_honest = custom_kernel


def custom_kernel(data):
    if WROTE_INPUTS:
        raise RuntimeError("the program could write into its input folder")
    return _honest(data)
'''
    g, _ = _grade(task, program)
    assert canary.read_text() == "host file: must stay as it is\n" and canary.stat().st_mtime == before.st_mtime
    assert g.feedback.startswith("correct"), g.feedback  # the planted links changed nothing


def test_a_fifo_in_place_of_an_output_is_the_programs_error_not_a_wait(tmp_path):
    """The program answers each call, then puts a FIFO where its output should be. Before: sia's read of the output
    blocked outside every timeout, holding the lock every other grading waits on."""
    task = load_task("trimul")
    program = (task.folder / "reference.py").read_text() + '''

import __main__, os

_reply = __main__.reply


def reply(**data):
    cmd = getattr(__main__, "cmd", None)
    out = cmd.get("out") if isinstance(cmd, dict) else None
    if out and data.get("ok"):
        try:
            os.unlink(out)
        except OSError:
            pass
        os.mkfifo(out)
    _reply(**data)


__main__.reply = reply
'''
    g, seconds = _grade(task, program)
    assert g.score == 0.0 and "not a regular file" in g.feedback, g.feedback
    assert seconds < 60, f"the grading took {seconds:.0f}s"


def test_a_grading_that_never_answers_ends_at_its_wall_clock_limit():
    """A program that hangs in its kernel: every call has a limit, and the grading as a whole ends at `wall_s`."""
    task = load_task("trimul")
    program = "import time\n\ndef custom_kernel(data):\n    time.sleep(3600)\n"
    g, seconds = _grade(task, program, wall_s=8.0)
    assert g.score == 0.0 and ("no answer" in g.feedback), g.feedback
    assert seconds < 16, f"the grading took {seconds:.0f}s"


def test_the_timing_note_says_what_was_measured_and_how_the_sides_were_pinned():
    task = load_task("trimul")
    g, _ = _grade(task, (task.folder / "reference.py").read_text())
    assert g.feedback.startswith("correct") and "paired rounds" in g.feedback and "thread" in g.feedback, g.feedback
    if detect().timing:
        assert "cpuset cgroup" in g.feedback and "frozen by its cgroup" in g.feedback and "CPU " in g.feedback, g.feedback


def test_a_frozen_worker_uses_no_cpu_and_a_thawed_one_does():
    """The freezer the fair timer relies on: a program burning CPU in helper processes stops entirely while frozen."""
    from sia.harness.programs import RUNNER_PRELUDE, ProgramWorker, pinned_cpus

    if not detect().timing:
        pytest.skip("no cgroup freezer here (not root): the worker is stopped with SIGSTOP instead")
    runner = RUNNER_PRELUDE + """
for cmd in commands():
    if cmd["cmd"] == "start":
        for _ in range(2):
            if os.fork() == 0:
                while True:
                    pass
    reply(ok=True)
"""
    with ProgramWorker(runner, {}, cpus=pinned_cpus(1)) as w:
        w.call({"cmd": "start"})
        spent = []
        for freeze in (True, False):
            w.freeze() if freeze else w.thaw()
            c0 = w.cpu_seconds()
            time.sleep(0.5)
            spent.append(w.cpu_seconds() - c0)
    assert spent[0] == pytest.approx(0.0, abs=0.01) and spent[1] > 0.3, spent
