# The worker a magic-denoise grading runs a program in (appended to sia.harness.programs.RUNNER_PRELUDE, in the sandbox).
# "ready" loads IN/program.py; "run" reads the counts, calls denoise(counts) and writes the result raw (float64).
import importlib.util
import traceback

import numpy as np

fn = None
for cmd in commands():
    try:
        if cmd["cmd"] == "ready":
            spec = importlib.util.spec_from_file_location("submission", os.path.join(IN, "program.py"))
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            fn = getattr(module, "denoise", None)
            reply(ok=callable(fn), error="" if callable(fn) else "the program defines no denoise(counts)")
        elif cmd["cmd"] == "run":
            counts = np.fromfile(cmd["in"], dtype=np.int64).reshape(cmd["shape"])
            y = np.asarray(fn(counts), dtype=np.float64)
            if y.shape != counts.shape:
                reply(ok=False, error=f"denoise returned shape {y.shape}, expected {counts.shape}")
                continue
            y.tofile(cmd["out"])
            reply(ok=True)
    except BaseException as e:
        reply(ok=False, error=f"{type(e).__name__}: {str(e)[:500]}", traceback=traceback.format_exc(limit=4)[-1500:])
