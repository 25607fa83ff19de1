"""The anomaly model: frozen encoder -> fuser -> decoder, and the head that turns the reconstruction
error into an anomaly map and an image score; building it from a config, and its parameter counts.

Described in training/README.md ("Overview", "Anomaly map and image score", "Size and cost").
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmad.training.config import ModelConfig
from mmad.training.models.layers import GaussianBlur
from mmad.training.models.mambaad import MFFOCE
from mmad.training.models.mmad import Decoder, DilatedMambaFuser
from mmad.training.models.scan_block import DirectionalScan

# ADer sums the three per-scale maps and divides by 3·3 (README "Anomaly map and image score"); kept
# so maps and thresholds compare with the published code. It only rescales.
MAP_SCALE = 1.0 / 9.0


class AnomalyOutput(NamedTuple):
    """What the model returns at inference. Export names its ONNX outputs from these fields."""

    anomaly_map: torch.Tensor  # [B, 1, H, W] float32
    score: torch.Tensor  # [B] float32: max of the map (mean of its score_topk highest values)


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
        if cfg.normalize_map:
            # Per-pixel statistics of the training normals' maps (fit_map_normalisation), part of the
            # forward pass so every exported runtime produces the same maps. Zero and one until fitted.
            self.register_buffer("map_mean", torch.zeros(1, 1, cfg.image_size, cfg.image_size))
            self.register_buffer("map_scale", torch.ones(1, 1, cfg.image_size, cfg.image_size))

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """What the fuser takes and the decoder reconstructs: scaled_features, smoothed."""
        return [self.smooth(f) for f in self.scaled_features(x)]

    def scaled_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The frozen encoder's features, finest first, divided by feature_scale."""
        with torch.no_grad():
            return [f.detach() / s for f, s in zip(self.encoder(x), self.feature_scale)]

    def smooth(self, f: torch.Tensor) -> torch.Tensor:
        """The k×k neighbourhood average of cfg.feature_smoothing (borders average the cells inside)."""
        k = self.cfg.feature_smoothing
        return f if k == 1 else F.avg_pool2d(f, k, stride=1, padding=k // 2, count_include_pad=False)

    def reconstruct(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.decoder(self.fuser(feats))

    def forward_features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        feats = self.encode(x)
        return feats, self.reconstruct(feats)

    def anomaly_map(self, feats: list[torch.Tensor], recon: list[torch.Tensor]) -> AnomalyOutput:
        amap = self.normalise_map(self.unnormalised_map(feats, recon))
        return AnomalyOutput(amap, self.image_score(amap))

    def unnormalised_map(self, feats: list[torch.Tensor], recon: list[torch.Tensor]) -> torch.Tensor:
        """The published map: per-scale cosine distances, upsampled, summed, scaled and blurred."""
        size = self.cfg.image_size
        total = 0
        for f, g in zip(feats, recon):
            a = 1 - F.cosine_similarity(f, g, dim=1).unsqueeze(1)
            total = total + F.interpolate(a, size=(size, size), mode="bilinear", align_corners=True)
        return self.blur(total * MAP_SCALE)

    def normalise_map(self, amap: torch.Tensor) -> torch.Tensor:
        """(map − map_mean) / map_scale per pixel when cfg.normalize_map, else the map unchanged."""
        return (amap - self.map_mean) / self.map_scale if self.cfg.normalize_map else amap

    def image_score(self, amap: torch.Tensor) -> torch.Tensor:
        """The map's maximum (as published), or the mean of its score_topk highest values."""
        if self.cfg.score_topk == 1:
            return amap.flatten(1).amax(dim=1)
        return amap.flatten(1).topk(self.cfg.score_topk, dim=1).values.mean(dim=1)

    @torch.no_grad()
    def fit_map_normalisation(self, raw_maps: torch.Tensor) -> None:
        """Set map_mean and map_scale from the un-normalised maps [N, 1, H, W] of normal training images:
        the per-pixel mean, and the per-pixel standard deviation plus its mean over the pixels (the
        added mean keeps the few-image estimate of a quiet pixel from dividing by almost nothing)."""
        if not self.cfg.normalize_map:
            raise ValueError("fit_map_normalisation: the model config has normalize_map=False")
        if raw_maps.ndim != 4 or raw_maps.shape[1:] != self.map_mean.shape[1:] or len(raw_maps) < 2:
            raise ValueError(f"fit_map_normalisation: expected maps [N >= 2, 1, S, S], got {list(raw_maps.shape)}")
        maps = raw_maps.double()
        std = maps.std(dim=0, keepdim=True)
        self.map_mean.copy_(maps.mean(dim=0, keepdim=True).float())
        self.map_scale.copy_((std + std.mean()).float())

    @torch.no_grad()
    def raw_maps(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Un-normalised maps [B, 1, H, W] of (encoded) features, in eval mode: what fit_map_normalisation takes."""
        return self.unnormalised_map(feats, self.reconstruct(feats))

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
    """Weights of the published Mixer that cannot change its output, which we omit (README "HybridBlock",
    the dead path): project_q and project_k (1×1 convs C→C with bias) and the offset head (cd/4 → cd/8 → 2)."""
    total = 0
    for dim, n in zip(cfg.decoder_dims, cfg.blocks_per_stage):
        cd = dim + 2
        qk = 2 * (dim * dim + dim)
        offsets = (cd // 4) * (cd // 8) + cd // 8 + (cd // 8) * 2 + 2
        total += n * (qk + offsets)
    return total
