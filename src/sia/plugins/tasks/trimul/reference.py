"""The TriMul reference: AlphaFold 3's triangle multiplicative update, "outgoing" edges (Algorithm 12), forward pass.

Written for sia from the algorithm, in the formulation of GPU MODE's TriMul
problem (itself based on lucidrains' triangle-multiplicative-module, MIT):
LayerNorm over channels; left and right projections, masked and gated by
sigmoid gates; out[b, i, j, h] = sum_k left[b, i, k, h] * right[b, j, k, h];
LayerNorm over the hidden channels, an output gate, and a final projection.
No biases but the LayerNorms'. This is the program a kernel must match and beat.

    data = (x [B, N, N, C] float32, mask [B, N, N] float32, weights: dict of tensors, config: {"dim", "hidden_dim"})
"""

import torch
import torch.nn.functional as F


def custom_kernel(data):
    x, mask, w, config = data
    x = F.layer_norm(x, (config["dim"],), w["norm.weight"], w["norm.bias"])
    m = mask.unsqueeze(-1)
    left = F.linear(x, w["left_proj.weight"]) * m * torch.sigmoid(F.linear(x, w["left_gate.weight"]))
    right = F.linear(x, w["right_proj.weight"]) * m * torch.sigmoid(F.linear(x, w["right_gate.weight"]))
    out_gate = torch.sigmoid(F.linear(x, w["out_gate.weight"]))
    out = torch.einsum("bikh,bjkh->bijh", left, right)
    out = F.layer_norm(out, (config["hidden_dim"],), w["to_out_norm.weight"], w["to_out_norm.bias"])
    return F.linear(out * out_gate, w["to_out.weight"])
