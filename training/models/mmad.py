"""MMAD's own parts: the HybridBlock (router, grouped scans, local convolutions, gated FFN), the
Dilated Mamba Fuser (dilated branches, a VSS block, the channel-attention block CAB), and the Hybrid
Mamba Decoder (which, built with LSS modules, is MambaAD's MambaUPNet).

Described in training/README.md ("Dilated Mamba Fuser (DMF)", "Hybrid Mamba Decoder (HMD)",
"HybridBlock"). MMAD: https://github.com/xyd2023/MMAD
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmad.training.config import ModelConfig
from mmad.training.models.layers import (
    LayerNorm2d,
    PatchExpand,
    conv_bn_act,
    init_convs_kaiming,
    init_decoder_weights,
)
from mmad.training.models.mambaad import FPNFusion, LSSModule, one_class_embedding
from mmad.training.models.scan_block import VSSBlock


class GatedFFN(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.project_in = nn.Conv2d(dim, 2 * dim, 1, bias=False)
        self.dwconv = nn.Conv2d(2 * dim, 2 * dim, 3, padding=1, groups=2 * dim, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(a) * b)


class RoutePredictor(nn.Module):
    """CAMixer-style predictor: channel attention, spatial attention and a per-pixel route p."""

    def __init__(self, dim: int):
        super().__init__()
        cd = dim + 2  # the map plus (y, x) coordinates
        hidden = cd // 4
        self.in_conv = nn.Conv2d(cd, hidden, 1)
        self.in_norm = LayerNorm2d(hidden, eps=1e-6)
        self.channel_att = nn.Conv2d(hidden, dim, 1)
        self.spatial_att = nn.Conv2d(hidden, 1, 3, padding=1)
        self.route = nn.Sequential(nn.Linear(1, 1), nn.LeakyReLU(0.1), nn.Linear(1, 2))

    def forward(self, x: torch.Tensor):
        b, _, h, w = x.shape
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
        pos = torch.stack(torch.meshgrid(ys, xs, indexing="ij")).unsqueeze(0).expand(b, -1, -1, -1)
        feat = F.leaky_relu(self.in_norm(self.in_conv(torch.cat([x, pos], dim=1))), 0.1)
        ca = torch.sigmoid(self.channel_att(feat.mean(dim=(2, 3), keepdim=True)))  # [B, C, 1, 1]
        sa = torch.sigmoid(self.spatial_att(feat))  # [B, 1, H, W]
        p = torch.softmax(self.route(feat.mean(dim=1, keepdim=True).permute(0, 2, 3, 1)), dim=-1)  # [B, H, W, 2]
        return ca, sa, p


class Mixer(nn.Module):
    """Routes pixels between v and v·sa, runs the grouped scans, adds local convolutions (README "HybridBlock").

    Routing at eval is deterministic and per pixel: m = 1[p0 > p1], the most likely outcome of the
    training-time hard Gumbel sample (whose P(m=1) is softmax(p)[0] > 0.5 exactly when p0 > p1).
    The published rule (a fresh random sample, top-k over the batch) is stochastic and couples the
    images of a batch; this one is neither and exports as a comparison.
    """

    def __init__(self, dim: int, size: int, cfg: ModelConfig, drop_path: float):
        super().__init__()
        self.groups = cfg.groups
        gdim = dim // cfg.groups
        self.predictor = RoutePredictor(dim)
        self.project_v = nn.Conv2d(dim, dim, 1)
        self.group_scans = nn.ModuleList(
            nn.Sequential(*(VSSBlock(gdim, size, curve, cfg, drop_path) for curve in cfg.scan_cascade))
            for _ in range(cfg.groups)
        )
        self.ssm_pro = nn.Conv2d(dim, dim, 1)
        self.local = nn.Sequential(
            *[
                layer
                for k in (3, 5, 7)
                for layer in (
                    nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim, bias=False),
                    nn.InstanceNorm2d(dim),
                    nn.SiLU(),
                )
            ]
        )
        self.project_out = nn.Conv2d(dim, dim, 1)

    def route_mask(self, p: torch.Tensor) -> torch.Tensor:  # p [B, H, W, 2] -> m [B, 1, H, W]
        if self.training:
            m = F.gumbel_softmax(p, tau=1.0, hard=True)[..., 0]  # p used as logits, as published
        else:
            m = (p[..., 0] > p[..., 1]).to(p.dtype)
        return m.unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W]
        ca, sa, p = self.predictor(x)
        v = self.project_v(x)
        m = self.route_mask(p)
        a = m * v + (1 - m) * (v * sa)
        parts = a.permute(0, 2, 3, 1).chunk(self.groups, dim=-1)
        o = torch.cat([scan(part) for scan, part in zip(self.group_scans, parts)], dim=-1)
        o = self.ssm_pro(o.permute(0, 3, 1, 2))
        o = F.gelu(self.local(o)) * ca + o
        return self.project_out(o)


class HybridBlock(nn.Module):
    """The HSS module of Fig. 3(d): post-norm Mixer and gated FFN. Channels-first."""

    def __init__(self, dim: int, size: int, cfg: ModelConfig, drop_path: float):
        super().__init__()
        self.mixer = Mixer(dim, size, cfg, drop_path)
        self.norm1 = LayerNorm2d(dim, eps=1e-6)
        self.ffn = GatedFFN(dim)
        self.norm2 = LayerNorm2d(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.mixer(x))
        return self.norm2(x + self.ffn(x))


class ChannelAttention(nn.Module):
    """CBAM channel attention: shared MLP over avg- and max-pooled features, sigmoid."""

    def __init__(self, dim: int, reduction: int = 16):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Conv2d(dim, dim // reduction, 1, bias=False), nn.ReLU(), nn.Conv2d(dim // reduction, dim, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(x.mean(dim=(2, 3), keepdim=True)) + self.mlp(x.amax(dim=(2, 3), keepdim=True)))


class CAB(nn.Module):
    """Conv → GELU → Conv → channel attention. As published it returns the attention weights only."""

    def __init__(self, dim: int, multiply: bool):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(dim, dim // 4, 3, padding=1), nn.GELU(), nn.Conv2d(dim // 4, dim, 3, padding=1)
        )
        self.attention = ChannelAttention(dim)
        self.multiply = multiply

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        w = self.attention(y)
        return y * w if self.multiply else w


class DilatedMambaFuser(nn.Module):
    """MMAD's DMF: FPN fusion, three dilated branches + identity, a VSS block and CAB, then OCE."""

    def __init__(self, channels: tuple[int, int, int], cfg: ModelConfig):
        super().__init__()
        o = cfg.fuse_out
        self.fusion = FPNFusion(channels, cfg.fuse_width, o)

        def dilated(*rates: int) -> nn.Sequential:
            return nn.Sequential(*(conv_bn_act(o, o, 3, dilation=r, bias=True, act=nn.SiLU) for r in rates))

        self.branch1, self.branch3, self.branch5 = dilated(1), dilated(1, 3), dilated(1, 3, 5)
        self.merge = nn.Conv2d(4 * o, o, 1)
        self.use_vss = cfg.fuser_vss
        if cfg.fuser_vss:
            self.norm_vss = nn.LayerNorm(o)
            self.vss = VSSBlock(o, 16, cfg.scan_curve, cfg, cfg.fuser_drop_path, cfg.fuser_dropout)
            self.norm_cab = nn.LayerNorm(o)
            self.cab = CAB(o, cfg.cab_multiply)
        self.oce = one_class_embedding(o, cfg.embed_dim, cfg.oce_blocks)
        init_convs_kaiming(self)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        s = self.fusion(feats)
        s = self.merge(torch.cat([self.branch1(s), self.branch3(s), self.branch5(s), s], dim=1))
        if self.use_vss:
            s = s.permute(0, 2, 3, 1)
            s = s + self.vss(self.norm_vss(s))
            cab = self.cab(self.norm_cab(s).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            s = (s + cab).permute(0, 3, 1, 2)
        return self.oce(s)


def drop_path_schedule(cfg: ModelConfig) -> list[list[float]]:
    """Per stage, the drop-path rate of each module: reversed linspace over all SS blocks (shared with
    MambaAD; README "Hybrid Mamba Decoder (HMD)")."""
    depths = [n * k for n, k in zip(cfg.blocks_per_stage, cfg.vss_per_module)]
    rates = torch.linspace(0, cfg.drop_path, sum(depths)).flip(0).tolist()
    out, start = [], 0
    for n, depth in zip(cfg.blocks_per_stage, depths):
        out.append(rates[start : start + n])
        start += depth
    return out


class Decoder(nn.Module):
    """MMAD's HMD (HybridBlocks), or with arch "mambaad" MambaAD's MambaUPNet (LSS modules).

    4 stages at 8, 16, 32, 64; returns the last 3 stages finest-first, projected to the encoder's widths.
    """

    def __init__(self, cfg: ModelConfig, out_channels: tuple[int, int, int]):
        super().__init__()
        dims = cfg.decoder_dims
        schedule = drop_path_schedule(cfg)
        self.stages = nn.ModuleList()
        for i, dim in enumerate(dims):
            size = 8 * 2**i
            layers = [] if i == 0 else [PatchExpand(dims[i - 1], dim)]
            for j, rate in enumerate(schedule[i]):
                if cfg.arch == "mmad":
                    layers.append(HybridBlock(dim, size, cfg, rate))
                else:
                    layers.append(LSSModule(dim, size, cfg, cfg.vss_per_module[i], rate))
            self.stages.append(nn.Sequential(*layers))
        # Identity when the decoder widths equal the encoder's (the paper's ResNet-34 configuration).
        fine_first = (dims[3], dims[2], dims[1])
        self.heads = nn.ModuleList(
            nn.Identity() if d == c else nn.Conv2d(d, c, 1) for d, c in zip(fine_first, out_channels)
        )
        self.apply(init_decoder_weights)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return [head(o) for head, o in zip(self.heads, outs[:0:-1])]
