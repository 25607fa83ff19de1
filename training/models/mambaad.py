"""MambaAD's parts: the LSS module (global scans beside local convolutions) and the MFF_OCE fuser,
whose FPN fusion and one-class embedding MMAD's fuser reuses.

Described in training/README.md ("MambaAD, the peer", "Dilated Mamba Fuser (DMF)").
MambaAD: https://arxiv.org/abs/2404.06564
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmad.training.config import ModelConfig
from mmad.training.models.layers import conv_bn_act, init_convs_kaiming
from mmad.training.models.scan_block import VSSBlock


def local_branch(dim: int, k: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(dim, dim, 1),
        nn.InstanceNorm2d(dim),
        nn.SiLU(),
        nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim, bias=False),
        nn.InstanceNorm2d(dim),
        nn.SiLU(),
        nn.Conv2d(dim, dim, 1),
        nn.InstanceNorm2d(dim),
        nn.SiLU(),
    )


class LSSModule(nn.Module):
    """Global HSS blocks beside two local conv branches (k = 5, 7), fused by a 1×1 conv. Channels-first."""

    def __init__(self, dim: int, size: int, cfg: ModelConfig, n_blocks: int, drop_path: float):
        super().__init__()
        self.blocks = nn.Sequential(*(VSSBlock(dim, size, cfg.scan_curve, cfg, drop_path) for _ in range(n_blocks)))
        self.local5 = local_branch(dim, 5)
        self.local7 = local_branch(dim, 7)
        self.fuse = nn.Conv2d(3 * dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.blocks(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.fuse(torch.cat([g, self.local5(x), self.local7(x)], dim=1)) + x


class Bottleneck(nn.Module):
    """ResNet bottleneck (expansion 4), as timm's."""

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        cout = 4 * planes
        self.body = nn.Sequential(
            conv_bn_act(cin, planes, 1),
            conv_bn_act(planes, planes, 3, stride),
            nn.Conv2d(planes, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(self.body(x) + shortcut)


class FPNFusion(nn.Module):
    """RD4AD's multi-scale fusion of [f1, f2, f3] into one 16×16 map."""

    def __init__(self, channels: tuple[int, int, int], width: int, out: int):
        super().__init__()
        c1, c2, c3 = channels
        self.down1 = conv_bn_act(c1, width, 3, stride=2)
        self.lat2 = conv_bn_act(c2, width, 1, bias=True)
        self.down2 = conv_bn_act(width, out, 3, stride=2)
        self.lat3 = conv_bn_act(c3, out, 1, bias=True)
        self.mix = conv_bn_act(out, out, 1, bias=True)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        f1, f2, f3 = feats
        p1 = self.lat2(f2) + self.down1(f1)
        return self.mix(self.down2(p1) + self.lat3(f3))


def one_class_embedding(cin: int, embed_dim: int, n_blocks: int) -> nn.Sequential:
    planes = embed_dim // 4
    return nn.Sequential(
        Bottleneck(cin, planes, stride=2), *(Bottleneck(embed_dim, planes) for _ in range(n_blocks - 1))
    )


class MFFOCE(nn.Module):
    """MambaAD's bottleneck: FPN fusion + one-class embedding → [B, embed, 8, 8]."""

    def __init__(self, channels: tuple[int, int, int], cfg: ModelConfig):
        super().__init__()
        self.fusion = FPNFusion(channels, cfg.fuse_width, cfg.fuse_out)
        self.oce = one_class_embedding(cfg.fuse_out, cfg.embed_dim, cfg.oce_blocks)
        init_convs_kaiming(self)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.oce(self.fusion(feats))
