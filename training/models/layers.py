"""Layers shared by both model families: stochastic depth, channels-first LayerNorm, conv-BN-act, the
fixed Gaussian blur of the anomaly map, the decoder's patch expansion, and the weight initialisations.

What each is for is described in training/README.md ("Architecture").
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class DropPath(nn.Module):
    """Stochastic depth per sample (https://arxiv.org/abs/1603.09382)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over channels of a channels-first [B, C, H, W] map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def conv_bn_act(
    cin: int, cout: int, k: int, stride: int = 1, dilation: int = 1, bias: bool = False, act: type[nn.Module] = nn.ReLU
) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, bias=bias), nn.BatchNorm2d(cout), act()
    )


class GaussianBlur(nn.Module):
    """scipy.ndimage.gaussian_filter (truncate 4, mode 'reflect') as a fixed separable convolution.

    scipy's 'reflect' repeats the edge pixel (d c b a | a b c d), which no torch padding mode does,
    so the padding is a constant gather: exact, and one Gather + Conv per axis in ONNX.
    """

    def __init__(self, sigma: float, size: int):
        super().__init__()
        radius = int(4.0 * sigma + 0.5)
        x = torch.arange(-radius, radius + 1, dtype=torch.float64)
        kernel = torch.exp(-0.5 * (x / sigma) ** 2)
        kernel = (kernel / kernel.sum()).float()
        idx = torch.arange(-radius, size + radius)
        idx = torch.where(idx < 0, -idx - 1, idx)
        idx = torch.where(idx >= size, 2 * size - idx - 1, idx)
        self.register_buffer("pad_index", idx, persistent=False)
        self.register_buffer("kernel_h", kernel.view(1, 1, 1, -1), persistent=False)
        self.register_buffer("kernel_v", kernel.view(1, 1, -1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 1, H, W]
        x = F.conv2d(x.index_select(3, self.pad_index), self.kernel_h)
        return F.conv2d(x.index_select(2, self.pad_index), self.kernel_v)


def init_convs_kaiming(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class PatchExpand(nn.Module):
    """Linear to 4·dim, pixel-shuffle the channels "(p1 p2 c)" into 2×2, LayerNorm. Channels-first."""

    def __init__(self, cin: int, dim: int):
        super().__init__()
        self.expand = nn.Linear(cin, 4 * dim, bias=False)
        self.norm = nn.LayerNorm(dim)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        y = self.expand(x.permute(0, 2, 3, 1)).view(b, h, w, 2, 2, self.dim)
        y = y.permute(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, self.dim)
        return self.norm(y).permute(0, 3, 1, 2)


def init_decoder_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)
