"""The plain selective scan: the reference every other implementation is tested against.

Shapes (the op contract, README.md beside this file; https://arxiv.org/abs/2312.00752):
    u, delta     [B, D, L]      float16/32/64
    A            [D, N]         float32/64
    Bmat, Cmat   [B, G, N, L]   like u; channel d uses group g = d // (D // G)
    D, delta_bias [D]           float32/64
    returns y    [B, D, L]      dtype of u

It loops over L in PyTorch and keeps the state in float32 (float64 when u is float64), so it is
slow but obviously right; it is also differentiable by autograd, which gives the reference
gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmad.plugins.selective_scan.cpu import scan_sizes


def check_shapes(u, delta, A, Bmat, Cmat, D, delta_bias) -> tuple[int, int, int, int, int]:
    """Validate the contract's shapes; returns (B, D, L, N, G). The one check, shared with the C++ path."""
    return tuple(scan_sizes(u, delta, A, Bmat, Cmat, D, delta_bias))


def discretize_delta(delta: torch.Tensor, delta_bias: torch.Tensor, delta_softplus: bool) -> torch.Tensor:
    """Δ = softplus(delta + bias) (linear above 20, as torch's softplus) or delta + bias."""
    x = delta + delta_bias[None, :, None]
    return F.softplus(x) if delta_softplus else x


def selective_scan_ref(u, delta, A, Bmat, Cmat, D, delta_bias, delta_softplus: bool = True) -> torch.Tensor:
    b, d, length, n, g = check_shapes(u, delta, A, Bmat, Cmat, D, delta_bias)
    acc = torch.float64 if u.dtype == torch.float64 else torch.float32
    uf, A, D = u.to(acc), A.to(acc), D.to(acc)
    dt = discretize_delta(delta.to(acc), delta_bias.to(acc), delta_softplus)
    # Expand the G groups to the D channels they serve: [B, D, N, L].
    Bx = Bmat.to(acc).repeat_interleave(d // g, dim=1)
    Cx = Cmat.to(acc).repeat_interleave(d // g, dim=1)
    # All steps' decays and inputs at once, then step through them with unbind: indexing a tensor
    # per step would make autograd's backward quadratic in L.
    decays = torch.exp(dt[:, :, None, :] * A[None, :, :, None]).unbind(-1)  # L × [B, D, N]
    inputs = ((dt * uf)[:, :, None, :] * Bx).unbind(-1)
    outputs = Cx.unbind(-1)
    h = torch.zeros(b, d, n, dtype=acc, device=u.device)
    ys = []
    for decay, x, c in zip(decays, inputs, outputs):
        h = decay * h + x
        ys.append((h * c).sum(-1))
    y = torch.stack(ys, dim=-1) + D[None, :, None] * uf
    return y.to(u.dtype)
