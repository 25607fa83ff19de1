"""Checkpoints: safetensors weights + a JSON description. Loading never executes code, and refuses (a
CheckpointError naming the file and the field or tensor) a config field of the wrong type or out of range,
a threshold that is not a finite number, weights whose sha256 differs, and weights holding NaN or inf.

A checkpoint is a folder:
    model.safetensors   every weight of the model, the frozen encoder included (self-contained)
    checkpoint.json     format version, package version, the full RunConfig, encoder, image size,
                        normalisation, categories, thresholds, the sha256 of model.safetensors
    resume.safetensors  optimizer state and RNG states, for `mmad train --resume` (optional)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mmad.runtime.contract import THRESHOLD_F1, atomic_write, file_sha256

from .config import RunConfig
from .thresholds import DEPLOYMENT, deployment_thresholds

FORMAT = "mmad-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "checkpoint.json"
RESUME_FILE = "resume.safetensors"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with the file and the reason."""


def package_version() -> str:
    try:
        return metadata.version("mmad-edge")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@dataclass
class CheckpointInfo:
    """The JSON side of a checkpoint."""

    config: RunConfig
    categories: list[str] = field(default_factory=list)
    thresholds: dict = field(default_factory=dict)  # keyed by contract.THRESHOLD_* (+ "f1_per_category")
    progress: dict = field(default_factory=dict)  # {"epoch": e, "iteration": i, "finished": bool}
    history: list = field(default_factory=list)  # periodic evaluation results
    weights_sha256: str = ""
    package_version: str = field(default_factory=package_version)

    def to_json(self) -> dict:
        m = self.config.model
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "package_version": self.package_version,
            "arch": m.arch,
            "encoder": m.encoder,
            "image_size": m.image_size,
            "mean": list(m.mean),
            "std": list(m.std),
            "categories": self.categories,
            "thresholds": self.thresholds,
            "progress": self.progress,
            "history": self.history,
            "weights_sha256": self.weights_sha256,
            "config": self.config.to_dict(),
        }


def save_checkpoint(
    folder: str | Path,
    model: torch.nn.Module,
    info: CheckpointInfo,
    resume_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(folder / WEIGHTS_FILE, lambda p: save_file(tensors, p))
    info.weights_sha256 = file_sha256(folder / WEIGHTS_FILE)
    if resume_state is not None:
        atomic_write(folder / RESUME_FILE, lambda p: save_file({k: v.contiguous() for k, v in resume_state.items()}, p))
    write_info(folder, info)
    return folder


def write_info(folder: str | Path, info: CheckpointInfo) -> None:
    path = Path(folder) / META_FILE
    text = json.dumps(info.to_json(), indent=2)
    atomic_write(path, lambda p: Path(p).write_text(text))


def read_info(folder: str | Path) -> CheckpointInfo:
    folder = Path(folder)
    path = folder / META_FILE
    if not folder.exists():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; a checkpoint folder holds {META_FILE} and {WEIGHTS_FILE}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err}); the file is corrupt or truncated") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f'{path}: not an MMAD checkpoint (expected "format": "{FORMAT}")')
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} (written by mmad-edge {data.get('package_version', '?')}); "
            f"this mmad-edge {package_version()} reads format version {FORMAT_VERSION}"
        )
    try:
        config = RunConfig.from_dict(data["config"])
        config.validate()
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: invalid model config: {err}") from None
    fields = {"categories": list, "thresholds": dict, "progress": dict, "history": list, "weights_sha256": str}
    for key, kind in fields.items():
        if not isinstance(data.get(key, kind()), kind):
            raise CheckpointError(f"{path}: '{key}' must be a JSON {_JSON_KINDS[kind]}, got {data[key]!r}")
    check_thresholds(data.get("thresholds", {}), path)
    return CheckpointInfo(
        config=config,
        categories=list(data.get("categories", [])),
        thresholds=dict(data.get("thresholds", {})),
        progress=dict(data.get("progress", {})),
        history=list(data.get("history", [])),
        weights_sha256=data.get("weights_sha256", ""),
        package_version=str(data.get("package_version", "")),
    )


_JSON_KINDS = {list: "list", dict: "object", str: "string"}


def check_thresholds(thresholds: Mapping, path: Path) -> None:
    """CheckpointError naming the file and entry when a stored threshold is not a finite number (a threshold
    that is text or NaN would be dropped at export or pass every image)."""
    deployment = thresholds.get(DEPLOYMENT, {})
    categories = deployment.get("categories") or {} if isinstance(deployment, Mapping) else {}
    if not isinstance(deployment, Mapping) or not isinstance(categories, Mapping):
        raise CheckpointError(
            f"{path}: thresholds.{DEPLOYMENT} must be a JSON object of thresholds, got {deployment!r}"
        )
    if not all(isinstance(entry, Mapping) for entry in categories.values()):
        raise CheckpointError(f"{path}: thresholds.{DEPLOYMENT}.categories: expected an object per category")
    try:
        deployment_thresholds(thresholds)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    f1 = thresholds.get(THRESHOLD_F1)
    if f1 is not None and (isinstance(f1, bool) or not isinstance(f1, (int, float)) or not math.isfinite(f1)):
        raise CheckpointError(f"{path}: thresholds.{THRESHOLD_F1} must be a finite number, got {f1!r}")


def load_tensors(path: Path, expected_sha256: str = "") -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    if expected_sha256 and file_sha256(path) != expected_sha256:
        raise CheckpointError(
            f"{path}: sha256 does not match {META_FILE}; the weights are truncated, corrupt or from another run"
        )
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot read safetensors ({err}); the file is corrupt or truncated") from None


def load_model(folder: str | Path, device: str | torch.device = "cpu"):
    """Rebuild the model from a checkpoint folder. Returns (model in eval mode, CheckpointInfo)."""
    from .encoders import encoder_spec
    from .models import AnomalyModel

    folder = Path(folder)
    info = read_info(folder)
    tensors = load_tensors(folder / WEIGHTS_FILE, info.weights_sha256)
    # The checkpoint carries the encoder's weights, so no weight file is needed here: build the
    # architecture only, and load_state fills in every weight (or fails).
    encoder = encoder_spec(info.config.model.encoder).build().freeze()
    model = AnomalyModel(info.config.model, encoder)
    load_state(model, tensors, folder / WEIGHTS_FILE)
    return model.to(device).eval(), info


def load_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit the model config in {META_FILE}: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    for key, value in tensors.items():
        if value.shape != expected[key].shape:
            raise CheckpointError(
                f"{path}: '{key}' has shape {tuple(value.shape)}, the model config in {META_FILE} "
                f"needs {tuple(expected[key].shape)}"
            )
    check_finite(tensors, path)
    model.load_state_dict(tensors)


def check_finite(tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    """CheckpointError naming the file and the first tensor with NaN or inf values: such weights make every
    score NaN, and a NaN score is never above a threshold, so every image would pass."""
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(
                f"{path}: tensor '{key}' holds {bad} non-finite value(s) (NaN or inf) of {value.numel()}; "
                "expected finite weights (the file is corrupt or the training diverged)"
            )


def load_resume_state(folder: str | Path) -> dict[str, torch.Tensor]:
    tensors = load_tensors(Path(folder) / RESUME_FILE)
    check_finite(tensors, Path(folder) / RESUME_FILE)
    return tensors
