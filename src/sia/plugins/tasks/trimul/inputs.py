"""Inputs of the TriMul problem, generated from a configuration and a seed (shared by the grader and the public helper).

As in GPU MODE's problem: x from a normal or a heavy-tailed Cauchy(0, 2)
distribution, a 0/1 mask (all ones with `nomask`), weights from a normal
distribution scaled by 1/sqrt(fan). Everything is drawn from one seeded
generator (the Cauchy by inverting its CDF), so a seed fixes an input exactly.
Weights are listed in `WEIGHTS` order: that order is also the layout of the
raw input files a grader hands to a kernel's worker.
"""

import math

import torch

WEIGHTS = ("norm.weight", "norm.bias", "left_proj.weight", "right_proj.weight", "left_gate.weight", "right_gate.weight",
           "out_gate.weight", "to_out_norm.weight", "to_out_norm.bias", "to_out.weight")


def shapes(c):
    """Shapes of x, mask and each weight for configuration `c` (bs, seqlen, dim, hiddendim)."""
    b, n, d, h = c["bs"], c["seqlen"], c["dim"], c["hiddendim"]
    w = {"norm.weight": (d,), "norm.bias": (d,), "to_out_norm.weight": (h,), "to_out_norm.bias": (h,), "to_out.weight": (d, h)}
    for name in ("left_proj", "right_proj", "left_gate", "right_gate", "out_gate"):
        w[f"{name}.weight"] = (h, d)
    return {"x": (b, n, n, d), "mask": (b, n, n), **{k: w[k] for k in WEIGHTS}}, (b, n, n, d)


def generate(c, seed, device="cpu"):
    """(x, mask, weights, config) for configuration `c`, drawn from `seed`."""
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    b, n, d, h = c["bs"], c["seqlen"], c["dim"], c["hiddendim"]
    if c.get("distribution") == "cauchy":
        u = torch.rand((b, n, n, d), generator=g).clamp(1e-6, 1 - 1e-6)
        x = 2.0 * torch.tan(math.pi * (u - 0.5))
    else:
        x = torch.randn((b, n, n, d), generator=g)
    mask = torch.ones((b, n, n)) if c.get("nomask") else torch.randint(0, 2, (b, n, n), generator=g).float()
    (s, _) = shapes(c)
    weights = {}
    for k in WEIGHTS:
        fan = s[k][0] if k != "to_out.weight" else d
        scale = 1.0 if k.startswith(("norm.", "to_out_norm.")) else 1.0 / math.sqrt(fan)
        weights[k] = torch.randn(s[k], generator=g) * scale
    to = (lambda t: t.to(device)) if device != "cpu" else (lambda t: t)
    return to(x.contiguous()), to(mask), {k: to(v) for k, v in weights.items()}, {"dim": d, "hidden_dim": h}


def flat(data):
    """The raw float32 bytes of an input, in the layout of `shapes`."""
    x, mask, weights, _ = data
    parts = [x, mask] + [weights[k] for k in WEIGHTS]
    return b"".join(t.detach().float().contiguous().cpu().numpy().tobytes() for t in parts)
