# The worker a TriMul grading runs a program in (appended to sia.harness.programs.RUNNER_PRELUDE, inside the sandbox).
# "ready" loads IN/program.py; "run" reads one input from a raw file, calls custom_kernel and writes the output raw.
import importlib.util
import traceback

import numpy as np
import torch

sys.path.insert(0, IN)
import inputs as trimul_inputs  # noqa: E402

CUDA = torch.cuda.is_available()
kernel = None
for cmd in commands():
    try:
        if cmd["cmd"] == "ready":
            spec = importlib.util.spec_from_file_location("submission", os.path.join(IN, "program.py"))
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            kernel = getattr(module, "custom_kernel", None)
            if not callable(kernel):
                reply(ok=False, error="the program defines no custom_kernel(data)")
                continue
            reply(ok=True, cuda=CUDA)
        elif cmd["cmd"] == "run":
            c = cmd["config"]
            shapes, out_shape = trimul_inputs.shapes(c)
            raw = np.fromfile(cmd["in"], dtype=np.float32)
            t, off = {}, 0
            for name, shape in shapes.items():
                n = int(np.prod(shape))
                t[name] = torch.from_numpy(raw[off:off + n].reshape(shape))
                off += n
            if CUDA:
                t = {k: v.cuda() for k, v in t.items()}
            data = (t["x"], t["mask"], {k: t[k] for k in trimul_inputs.WEIGHTS}, {"dim": c["dim"], "hidden_dim": c["hiddendim"]})
            if CUDA:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                start.record()
            out = kernel(data)
            ms = None
            if CUDA:
                end.record()
                torch.cuda.synchronize()
                ms = start.elapsed_time(end)
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(out_shape):
                reply(ok=False, error=f"custom_kernel returned {type(out).__name__} of shape {tuple(getattr(out, 'shape', ()))}, "
                                      f"expected a tensor of shape {tuple(out_shape)}")
                continue
            out.detach().float().cpu().contiguous().numpy().tofile(cmd["out"])
            reply(ok=True, cuda_ms=ms)
        else:
            reply(ok=False, error=f"unknown command {cmd.get('cmd')!r}")
    except BaseException as e:  # the program's failure is an answer, not the end of the worker
        reply(ok=False, error=f"{type(e).__name__}: {str(e)[:500]}", traceback=traceback.format_exc(limit=4)[-1500:])
