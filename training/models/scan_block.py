"""The state-space scan block: the 8-direction gather and scatter, SS2D (VMamba's 2-D selective scan
with hybrid scan orders) and the VSS block around it. Channels-last.

Described in training/README.md ("VSS block and SS2D", "Scan orders and directions"); the
SelectiveScan op it calls has its contract in plugins/selective_scan/README.md.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmad.plugins.selective_scan.op import selective_scan
from mmad.training.config import ModelConfig
from mmad.training.models.layers import DropPath
from mmad.training.models.scan_orders import direction_indices, inverse_indices


class _PairedGather(torch.autograd.Function):
    """A gather whose gradient is the paired gather (encode ↔ decode are each other's transpose),
    so backward is one more gather instead of a scatter-add into a zeroed tensor."""

    @staticmethod
    def forward(ctx, x, scan: "DirectionalScan", decode: bool):
        ctx.scan, ctx.decode = scan, decode
        return scan.gather_decode(x) if decode else scan.gather_encode(x)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        return (ctx.scan.gather_encode(grad) if ctx.decode else ctx.scan.gather_decode(grad)), None, None


class DirectionalScan(nn.Module):
    """Gathers a map into K scan sequences and merges K sequences back (sum over directions).

    Two forms of the same permutation, chosen by where the model runs (measured in
    plugins/selective_scan/README.md, "Applying the scan orders"):
    - PyTorch: one `torch.gather` straight into the scan's [B, K, C, L] layout and one back, the [K, L]
      tables broadcast over batch and channels. aten::index_select along L, which this replaced, moved one
      element at a time and was 38 % of CPU inference (issue 14).
    - ONNX export: Gathers of whole rows of C values. onnxruntime's Gather copies one block per index, so
      gathering single elements along L was ~10x slower there; encode transposes the map to [B, L, C] rows,
      decode reads the K sequences as [B, L, K, C] rows (the transposes OpenVINO runs fastest).
    """

    def __init__(self, curve: str, size: int, num_directions: int):
        super().__init__()
        idx = direction_indices(curve, size, num_directions)  # [K, L]
        k, length = idx.shape
        inv = inverse_indices(idx)
        self.curve, self.size, self.num_directions, self.length = curve, size, num_directions, length
        # Derived from the config, so not stored in checkpoints. [1, K, 1, L] tables for torch.gather; flat
        # [K·L] row tables for the exported Gathers: encode reads row idx[k, p] of the [L, C] map, decode reads
        # row inv[k, l]·K + k of the sequences laid out as [L, K, C].
        self.register_buffer("encode_table", torch.from_numpy(idx).view(1, k, 1, length), persistent=False)
        self.register_buffer("decode_table", torch.from_numpy(inv).view(1, k, 1, length), persistent=False)
        self.register_buffer("encode_row_index", torch.from_numpy(idx).reshape(-1), persistent=False)
        rows = torch.from_numpy(inv) * k + torch.arange(k).view(-1, 1)
        self.register_buffer("decode_row_index", rows.reshape(-1), persistent=False)

    def gather_encode(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, L] -> [B, K, C, L], contiguous
        b, c, length = x.shape
        shape = (b, self.num_directions, c, length)
        return torch.gather(x.unsqueeze(1).expand(shape), 3, self.encode_table.expand(shape))

    def gather_decode(self, y: torch.Tensor) -> torch.Tensor:  # [B, K, C, L] -> [B, C, L]
        return torch.gather(y, 3, self.decode_table.expand(y.shape)).sum(1)

    def rows_encode(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, L] -> [B, K, C, L] (a view): the ONNX form
        b, c, length = x.shape
        rows = x.transpose(1, 2).index_select(1, self.encode_row_index)  # [B, K·L, C]
        return rows.view(b, self.num_directions, length, c).transpose(2, 3)

    def rows_decode(self, y: torch.Tensor) -> torch.Tensor:  # [B, K, C, L] -> [B, L, C]: the ONNX form
        b, k, c, length = y.shape
        rows = y.permute(0, 3, 1, 2).reshape(b, length * k, c).index_select(1, self.decode_row_index)
        return rows.view(b, k, length, c).sum(1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, L] -> [B, K, C, L]
        if torch.onnx.is_in_onnx_export():
            return self.rows_encode(x)
        return _PairedGather.apply(x, self, False) if x.requires_grad else self.gather_encode(x)

    def decode_to_rows(self, y: torch.Tensor) -> torch.Tensor:  # [B, K, C, L] -> [B, L, C] (maybe a view)
        if torch.onnx.is_in_onnx_export():
            return self.rows_decode(y)
        merged = _PairedGather.apply(y, self, True) if y.requires_grad else self.gather_decode(y)
        return merged.transpose(1, 2)

    def decode(self, y: torch.Tensor) -> torch.Tensor:  # [B, K, C, L] -> [B, C, L]
        return self.decode_to_rows(y).transpose(1, 2)


class SS2D(nn.Module):
    """VMamba's 2-D selective scan with hybrid scan orders (README "VSS block and SS2D"). Channels-last in and out."""

    def __init__(
        self,
        d_model: int,
        size: int,
        curve: str = "hilbert",
        num_directions: int = 8,
        d_state: int = 16,
        expand: int = 2,
        dropout: float = 0.0,
    ):
        super().__init__()
        d_inner = expand * d_model
        rank = math.ceil(d_model / 16)
        k = num_directions
        self.d_inner, self.d_state, self.rank, self.num_directions = d_inner, d_state, rank, k
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, 3, padding=1, groups=d_inner, bias=True)
        self.x_proj_weight = nn.Parameter(torch.empty(k, rank + 2 * d_state, d_inner))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d_inner, rank))
        self.dt_projs_bias = nn.Parameter(torch.empty(k, d_inner))
        self.A_logs = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(k * d_inner, 1))
        self.Ds = nn.Parameter(torch.ones(k * d_inner))
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.scan = DirectionalScan(curve, size, num_directions)
        self.scan_backend = "auto"  # export sets this to route the scan through its ONNX op
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self, dt_min: float = 1e-3, dt_max: float = 0.1, dt_floor: float = 1e-4) -> None:
        bound = self.d_inner**-0.5  # nn.Linear's default init, as the stacked projections had
        nn.init.uniform_(self.x_proj_weight, -bound, bound)
        nn.init.uniform_(self.dt_projs_weight, -(self.rank**-0.5), self.rank**-0.5)
        dt = torch.exp(torch.rand_like(self.dt_projs_bias) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_floor)
        self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹
        self.A_logs.copy_(
            torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32)).repeat(self.A_logs.shape[0], 1)
        )
        self.Ds.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, H, W, C]
        b, h, w, _ = x.shape
        x, z = self.in_proj(x).chunk(2, dim=-1)
        x = F.silu(self.conv2d(x.permute(0, 3, 1, 2)))  # [B, d, H, W]
        xs = self.scan.encode(x.flatten(2))  # [B, K, d, L]
        x_dbl = torch.matmul(self.x_proj_weight, xs)  # [B, K, R+2N, L]
        dts, Bs, Cs = torch.split(x_dbl, [self.rank, self.d_state, self.d_state], dim=2)
        dts = torch.matmul(self.dt_projs_weight, dts)  # [B, K, d, L]
        length = h * w
        y = selective_scan(
            xs.reshape(b, -1, length),
            dts.reshape(b, -1, length),
            -torch.exp(self.A_logs.float()),
            Bs.contiguous(),
            Cs.contiguous(),
            self.Ds.float(),
            self.dt_projs_bias.reshape(-1).float(),
            delta_softplus=True,
            backend=self.scan_backend,
        ).view(b, self.num_directions, self.d_inner, length)
        y = self.scan.decode_to_rows(y).reshape(b, h, w, self.d_inner)
        y = self.out_norm(y) * F.silu(z)
        return self.dropout(self.out_proj(y))


class VSSBlock(nn.Module):
    """y = x + DropPath(SS2D(LN(x))) (the HSS block; README "VSS block and SS2D"). Channels-last."""

    def __init__(self, dim: int, size: int, curve: str, cfg: ModelConfig, drop_path: float = 0.0, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.ss2d = SS2D(dim, size, curve, cfg.num_directions, cfg.d_state, cfg.ssm_expand, dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.ss2d(self.norm(x)))
