"""MMAD and MambaAD: frozen encoder → fuser → state-space decoder; reconstruction error = anomaly map.

One self-contained model family, in the order: building blocks → state-space blocks → MMAD's
HybridBlock → MambaAD's LSS → fusers → decoders → the model → parameter counts.
Everything follows shared/docs/MODEL_SPEC.md; section numbers (§) point there.
MMAD: https://github.com/xyd2023/MMAD · MambaAD: https://arxiv.org/abs/2404.06564
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmad.plugins.selective_scan.op import selective_scan
from mmad.training.config import ModelConfig
from mmad.training.models.scan_orders import direction_indices, inverse_indices

# ADer sums the three per-scale maps and divides by 3·3 (§5.2); kept so maps and thresholds
# compare with the published code. It only rescales.
MAP_SCALE = 1.0 / 9.0


class AnomalyOutput(NamedTuple):
    """What the model returns at inference. Export names its ONNX outputs from these fields."""

    anomaly_map: torch.Tensor  # [B, 1, H, W] float32
    score: torch.Tensor  # [B] float32: max of the map


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# State-space blocks (§2.4, §2.5)
# ----------------------------------------------------------------------------------------------
class _PairedGather(torch.autograd.Function):
    """A gather whose gradient is the paired gather (encode ↔ decode are each other's transpose),
    so backward is one more gather instead of a scatter-add into a zeroed tensor."""

    @staticmethod
    def forward(ctx, x, scan: "DirectionalScan", decode: bool):
        ctx.scan, ctx.decode = scan, decode
        return scan.decode_flat(x) if decode else scan.encode_flat(x)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        return (ctx.scan.encode_flat(grad) if ctx.decode else ctx.scan.decode_flat(grad)), None, None


class DirectionalScan(nn.Module):
    """Gathers a map into K scan sequences and merges K sequences back (sum over directions)."""

    def __init__(self, curve: str, size: int, num_directions: int):
        super().__init__()
        idx = direction_indices(curve, size, num_directions)  # [K, L]
        length = idx.shape[1]
        inv = inverse_indices(idx) + length * torch.arange(num_directions).view(-1, 1).numpy()
        self.curve, self.size, self.num_directions, self.length = curve, size, num_directions, length
        # Derived from the config, so not stored in checkpoints.
        self.register_buffer("encode_index", torch.from_numpy(idx).reshape(-1), persistent=False)  # [K·L]
        self.register_buffer("decode_index", torch.from_numpy(inv).reshape(-1), persistent=False)  # [K·L]

    def encode_flat(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, L] -> [B, C, K·L]
        return x.index_select(2, self.encode_index)

    def decode_flat(self, s: torch.Tensor) -> torch.Tensor:  # [B, C, K·L] -> [B, C, L]
        b, c, _ = s.shape
        return s.index_select(2, self.decode_index).view(b, c, self.num_directions, self.length).sum(2)

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, L] -> [B, K, C, L]
        b, c, length = x.shape
        seq = _PairedGather.apply(x, self, False) if x.requires_grad else self.encode_flat(x)
        return seq.view(b, c, self.num_directions, length).transpose(1, 2)

    def decode(self, y: torch.Tensor) -> torch.Tensor:  # [B, K, C, L] -> [B, C, L]
        b, k, c, length = y.shape
        flat = y.transpose(1, 2).reshape(b, c, k * length)
        return _PairedGather.apply(flat, self, True) if flat.requires_grad else self.decode_flat(flat)


class SS2D(nn.Module):
    """VMamba's 2-D selective scan with hybrid scan orders (§2.4). Channels-last in and out."""

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
        y = self.scan.decode(y).transpose(1, 2).reshape(b, h, w, self.d_inner)
        y = self.out_norm(y) * F.silu(z)
        return self.dropout(self.out_proj(y))


class VSSBlock(nn.Module):
    """y = x + DropPath(SS2D(LN(x))) (the HSS block of §2.4). Channels-last."""

    def __init__(self, dim: int, size: int, curve: str, cfg: ModelConfig, drop_path: float = 0.0, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.ss2d = SS2D(dim, size, curve, cfg.num_directions, cfg.d_state, cfg.ssm_expand, dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.ss2d(self.norm(x)))


# ----------------------------------------------------------------------------------------------
# MMAD's HybridBlock (§3.3): router + grouped scans beside convolutions, then a gated FFN
# ----------------------------------------------------------------------------------------------
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
    """Routes pixels between v and v·sa, runs the grouped scans, adds local convolutions (§3.3).

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


# ----------------------------------------------------------------------------------------------
# MambaAD's LSS module (§2.3)
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# Fusers: MambaAD's MFF_OCE (§2.1) and MMAD's Dilated Mamba Fuser (§3.2)
# ----------------------------------------------------------------------------------------------
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


class MFFOCE(nn.Module):
    """MambaAD's bottleneck: FPN fusion + one-class embedding → [B, embed, 8, 8]."""

    def __init__(self, channels: tuple[int, int, int], cfg: ModelConfig):
        super().__init__()
        self.fusion = FPNFusion(channels, cfg.fuse_width, cfg.fuse_out)
        self.oce = one_class_embedding(cfg.fuse_out, cfg.embed_dim, cfg.oce_blocks)
        init_convs_kaiming(self)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.oce(self.fusion(feats))


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


def init_convs_kaiming(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------------------------
# Decoders: MMAD's HMD (§3.3) and MambaAD's MambaUPNet (§2.2)
# ----------------------------------------------------------------------------------------------
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


def drop_path_schedule(cfg: ModelConfig) -> list[list[float]]:
    """Per stage, the drop-path rate of each module: reversed linspace over all SS blocks (§2.2)."""
    depths = [n * k for n, k in zip(cfg.blocks_per_stage, cfg.vss_per_module)]
    rates = torch.linspace(0, cfg.drop_path, sum(depths)).flip(0).tolist()
    out, start = [], 0
    for n, depth in zip(cfg.blocks_per_stage, depths):
        out.append(rates[start : start + n])
        start += depth
    return out


class Decoder(nn.Module):
    """4 stages at 8, 16, 32, 64; returns the last 3 stages finest-first, projected to the encoder's widths."""

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


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------
class AnomalyModel(nn.Module):
    """Frozen encoder E, trainable fuser and decoder D. forward() gives the anomaly map and score.

    `forward_features(x)` -> (F, G): encoder and reconstructed features, finest first; training
    minimises Σ_i MSE(F_i, G_i). Input x: [B, 3, 256, 256] normalised with cfg.mean/std.
    """

    def __init__(self, cfg: ModelConfig, encoder: nn.Module):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.encoder = encoder
        channels = tuple(encoder.channels)
        fuser = DilatedMambaFuser if cfg.arch == "mmad" else MFFOCE
        self.fuser = fuser(channels, cfg)
        self.decoder = Decoder(cfg, channels)
        self.blur = GaussianBlur(cfg.blur_sigma, cfg.image_size)
        # Per-scale divisors of the encoder features (1 unless cfg.normalize_features, then set from
        # the training images before training). Cosine maps don't change; the loss and the decoder's
        # output layers work at unit scale instead of the encoder's (≈ 7-9 for EfficientNet-Lite0).
        self.register_buffer("feature_scale", torch.ones(3))

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The frozen encoder's features, finest first, divided by feature_scale."""
        with torch.no_grad():
            return [f.detach() / s for f, s in zip(self.encoder(x), self.feature_scale)]

    def reconstruct(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.decoder(self.fuser(feats))

    def forward_features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        feats = self.encode(x)
        return feats, self.reconstruct(feats)

    def anomaly_map(self, feats: list[torch.Tensor], recon: list[torch.Tensor]) -> AnomalyOutput:
        size = self.cfg.image_size
        total = 0
        for f, g in zip(feats, recon):
            a = 1 - F.cosine_similarity(f, g, dim=1).unsqueeze(1)
            total = total + F.interpolate(a, size=(size, size), mode="bilinear", align_corners=True)
        amap = self.blur(total * MAP_SCALE)
        return AnomalyOutput(amap, amap.flatten(1).amax(dim=1))

    def forward(self, x: torch.Tensor) -> AnomalyOutput:
        return self.anomaly_map(*self.forward_features(x))

    def trainable_parameters(self):
        return [p for n, p in self.named_parameters() if not n.startswith("encoder.")]


def build_model(
    cfg: ModelConfig, encoder_weights: str | None = "default", random_encoder: bool = False
) -> AnomalyModel:
    from mmad.training.encoders import build_encoder

    encoder = build_encoder(cfg.encoder, weights=encoder_weights, random_init=random_encoder)
    return AnomalyModel(cfg, encoder)


# ----------------------------------------------------------------------------------------------
# Parameter counts
# ----------------------------------------------------------------------------------------------
def count_parameters(model: AnomalyModel) -> dict[str, int]:
    """Weights per part, plus the scan index tables the published code stores as parameters."""
    parts = {
        name: sum(p.numel() for p in getattr(model, name).parameters()) for name in ("encoder", "fuser", "decoder")
    }
    index = sum(2 * m.length for m in model.modules() if isinstance(m, DirectionalScan))
    parts["trainable"] = sum(p.numel() for p in model.trainable_parameters())
    parts["total"] = parts["encoder"] + parts["fuser"] + parts["decoder"]
    parts["index_tables"] = index
    if model.cfg.arch == "mmad":
        parts["dead_router_weights"] = dead_router_weights(model.cfg)
    return parts


def dead_router_weights(cfg: ModelConfig) -> int:
    """Weights of the published Mixer that cannot change its output (§3.3 item 3), which we omit:
    project_q and project_k (1×1 convs C→C with bias) and the offset head (cd/4 → cd/8 → 2)."""
    total = 0
    for dim, n in zip(cfg.decoder_dims, cfg.blocks_per_stage):
        cd = dim + 2
        qk = 2 * (dim * dim + dim)
        offsets = (cd // 4) * (cd // 8) + cd // 8 + (cd // 8) * 2 + 2
        total += n * (qk + offsets)
    return total
