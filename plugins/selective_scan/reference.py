"""The plain selective scan: the reference every other implementation is tested against.

Shapes (see shared/docs/SELECTIVE_SCAN_OP.md, "Mamba S6"; https://arxiv.org/abs/2312.00752):
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


def check_shapes(u, delta, A, Bmat, Cmat, D, delta_bias) -> tuple[int, int, int, int, int]:
    """Validate the contract's shapes; returns (B, D, L, N, G)."""
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be [B, D, L], got {tuple(u.shape)}")
    b, d, length = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"selective_scan: delta must match u {tuple(u.shape)}, got {tuple(delta.shape)}")
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"selective_scan: A must be [D={d}, N], got {tuple(A.shape)}")
    n = A.shape[1]
    if Bmat.dim() != 4 or Bmat.shape[0] != b or Bmat.shape[2] != n or Bmat.shape[3] != length:
        raise ValueError(f"selective_scan: B must be [B={b}, G, N={n}, L={length}], got {tuple(Bmat.shape)}")
    g = Bmat.shape[1]
    if Cmat.shape != Bmat.shape:
        raise ValueError(f"selective_scan: C must match B {tuple(Bmat.shape)}, got {tuple(Cmat.shape)}")
    if g == 0 or d % g:
        raise ValueError(f"selective_scan: groups G={g} must divide D={d}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t.shape != (d,):
            raise ValueError(f"selective_scan: {name} must be [D={d}], got {tuple(t.shape)}")
    return b, d, length, n, g


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
