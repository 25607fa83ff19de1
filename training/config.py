"""All configuration in one typed place. Every checkpoint and report carries `to_dict()` of these."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field

from mmad.runtime.contract import (
    DEFAULT_FALSE_ALARM_RATE,
    DEFAULT_THRESHOLD_QUANTILE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MIN_NORMAL_SCORES,
)
from mmad.runtime.errors import ConfigError

ARCHS = ("mmad", "mambaad")
LOSSES = ("mse", "cosine")
# `mmad eval --baseline knn`: patches per category in the memory bank (176-channel float32 for Lite0: 35 MB).
KNN_BANK_SIZE = 50_000


@dataclass
class ModelConfig:
    """The model. Defaults are the paper's MMAD (training/README.md, "Architecture") with the offline encoder."""

    arch: str = "mmad"  # "mmad" (DMF + HMD) or "mambaad" (MFF_OCE + MambaUPNet, the published peer)
    encoder: str = "efficientnet_lite0"  # or "resnet34" (the paper's), "wide_resnet50_2"
    image_size: int = 256  # scan tables are built for 256×256 input (8/16/32/64 grids)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # Fuser (DMF / MFF_OCE): FPN widths and the 8×8 embedding.
    fuse_width: int = 128  # width after f1/f2 fusion (spec: 128)
    fuse_out: int = 256  # width of the fused 16×16 map (spec: 256)
    embed_dim: int = 512  # channels of the 8×8 embedding = decoder_dims[0]
    oce_blocks: int = 3  # Bottlenecks in the one-class embedding
    fuser_vss: bool = True  # DMF's VSS + CAB after the dilated branches
    cab_multiply: bool = False  # README "Dilated Mamba Fuser (DMF)": the CAB adds its weights; True rescales
    # Decoder (HMD / MambaUPNet).
    decoder_dims: tuple[int, ...] = (512, 256, 128, 64)  # stage widths, coarse → fine
    blocks_per_stage: tuple[int, ...] = (1, 2, 2, 1)  # HybridBlocks (mmad) / LSS modules (mambaad)
    vss_per_module: tuple[int, ...] = (3, 2, 3, 3)  # mambaad only: HSS blocks per LSS module
    groups: int = 4  # mmad: channel groups of the grouped scan (GSS)
    scan_cascade: tuple[str, ...] = ("hilbert", "zorder", "zigzag")  # mmad: VSS order per group
    scan_curve: str = "hilbert"  # mambaad and the fuser's VSS
    num_directions: int = 8
    d_state: int = 16
    ssm_expand: int = 2
    drop_path: float = 0.2
    fuser_drop_path: float = 0.1
    fuser_dropout: float = 0.1
    # Divide each encoder scale by its RMS over the training images (see AnomalyModel.feature_scale).
    normalize_features: bool = False
    # Average each encoder scale over its k×k neighbourhood (1: off), as PatchCore does before comparing
    # patches: the decoder reconstructs local texture statistics rather than every grain (issue 12).
    feature_smoothing: int = 1
    # Anomaly map.
    blur_sigma: float = 4.0
    # Subtract the training normals' per-pixel mean map and divide by their per-pixel spread (buffers set
    # after training, part of the model's forward): fixed highlights and edges stop scoring (issue 12).
    normalize_map: bool = False
    score_topk: int = 1  # image score: mean of the k highest map values (1: the maximum, as published)

    def validate(self) -> None:
        """ConfigError naming the field unless every field has its type and range (check_fields)."""
        check_fields(self, "model", MODEL_RANGES)
        if self.arch not in ARCHS:
            raise ConfigError(f"model.arch must be one of {ARCHS}, got '{self.arch}'")
        if self.image_size != 256:
            raise ConfigError(
                f"model.image_size must be 256 (scan tables are built for 8..64 grids), got {self.image_size}"
            )
        n = len(self.decoder_dims)
        if n != 4 or len(self.blocks_per_stage) != 4:
            raise ConfigError("model.decoder_dims and model.blocks_per_stage need 4 entries (8, 16, 32, 64 grids)")
        if self.decoder_dims[0] != self.embed_dim:
            raise ConfigError(
                f"model.decoder_dims[0] ({self.decoder_dims[0]}) must equal model.embed_dim ({self.embed_dim})"
            )
        if self.arch == "mmad" and any(d % self.groups for d in self.decoder_dims):
            raise ConfigError(f"model.decoder_dims {self.decoder_dims} must be divisible by groups={self.groups}")
        if self.feature_smoothing % 2 == 0:
            raise ConfigError(f"model.feature_smoothing must be odd (a centred window), got {self.feature_smoothing}")
        if self.num_directions not in (1, 2, 4, 8):
            raise ConfigError(f"model.num_directions must be 1, 2, 4 or 8, got {self.num_directions}")


@dataclass
class TrainConfig:
    """The training recipe. Defaults are the paper's (training/README.md, "Training recipe"); see PRESETS."""

    epochs: int = 500
    batch_size: int = 8
    base_lr: float = 0.005  # lr = base_lr · batch_size / 16
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    clip_grad: float = 5.0
    lr_drop_at: float = 0.8  # ×0.1 once at this fraction of the iterations
    loss_weight: float = 5.0  # Σ over 3 scales of loss_weight · MSE
    loss: str = "mse"  # "mse" (as published) or "cosine": mean (1 − cos) per position, the map's own distance
    feature_noise: float = 0.0  # std of Gaussian noise added to the decoder's input features while training
    seed: int = 42
    eval_every: int = 50  # epochs; 0 = only at the end
    eval_max_images: int = 0  # test images per category in those evaluations (an even spread); 0 = all
    cache_features: bool = False  # the encoder is frozen and there is no augmentation: compute F once
    num_workers: int = 0
    # The deployment threshold (training/thresholds.py) comes from normal training images held out of
    # training, per category: max(threshold_holdout · n, threshold_min_images) of a category's n normals,
    # but never more than half of them (the floor gives way; an explicit fraction above 0.5 is obeyed).
    # Why 20: the threshold is contract.fit_threshold, the rule `mmad calibrate` uses, and it needs at least
    # contract.MIN_NORMAL_SCORES (20) scores; 10 % alone gives 6 images for a category of 60 (MVTec's
    # smallest), whose 99 % quantile is just their maximum, with no margin (issue 11). Half keeps most of a
    # small category for training: below 40 normals the fit cannot be made and the category falls back to
    # the threshold_quantile rule, with a warning.
    threshold_holdout: float = 0.1
    threshold_min_images: int = MIN_NORMAL_SCORES
    threshold_false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE  # fit_threshold's target rate
    threshold_quantile: float = DEFAULT_THRESHOLD_QUANTILE  # the fallback rule, for fewer than 20 held out
    max_minutes: float = 0.0  # stop (and save) after this wall time; 0 = no limit

    @property
    def lr(self) -> float:
        return self.base_lr * self.batch_size / 16

    def validate(self) -> None:
        """ConfigError naming the field unless every field has its type and range (check_fields)."""
        check_fields(self, "train", TRAIN_RANGES)
        if self.loss not in LOSSES:
            raise ConfigError(f"config train.loss: expected one of {LOSSES}, got {self.loss!r}")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str = "paper"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Every field's type and range (ConfigError naming the field): before anything is built or trained."""
        self.model.validate()
        self.train.validate()

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        # A run saved before a field existed was made with the field's old behaviour, not today's default
        # (so `--resume` of such a run is refused as a different configuration, not silently changed).
        if not isinstance(data, dict):
            raise ConfigError(f"config: expected an object with 'model' and 'train', got {data!r}")
        train = data.get("train", {})
        if "train" in data and isinstance(train, dict):
            train = {**LEGACY_TRAIN_VALUES, **train}
        return cls(
            model=dataclass_from_dict(ModelConfig, data.get("model", {}), "model"),
            train=dataclass_from_dict(TrainConfig, train, "train"),
            preset=data.get("preset", "custom"),
        )


# TrainConfig fields added after runs were saved without them: the value that reproduces those runs.
LEGACY_TRAIN_VALUES = {"threshold_min_images": 0}


def dataclass_from_dict(cls, data: dict, where: str):
    """Build a dataclass from JSON data (lists become tuples), with a clear error for unknown or mistyped
    fields (check_fields; ranges are the dataclass's validate())."""
    if not isinstance(data, dict):
        raise ConfigError(f"config {where}: expected an object of fields, got {data!r}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"config '{where}': unknown field(s) {unknown}; expected some of {sorted(names)}")
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in data.items()}
    built = cls(**values)
    check_fields(built, where)
    return built


# --- Validation: every field's type (from its annotation) and range, in one place ----------------------
# A range: (test, what is expected); applied to each value of a tuple field.
def _at_least(low: float) -> tuple:
    return (lambda v: v >= low, f">= {low}")


def _above(low: float) -> tuple:
    return (lambda v: v > low, f"> {low}")


def _between(low: float, high: float, low_in: bool = True, high_in: bool = False) -> tuple:
    def test(v) -> bool:
        return (low <= v if low_in else low < v) and (v <= high if high_in else v < high)

    return (test, f"in {'[' if low_in else '('}{low}, {high}{']' if high_in else ')'}")


_FRACTION = _between(0, 1)
MODEL_RANGES = {
    "std": _above(0),  # divides every pixel: 0 gives inf/NaN inputs and a model that passes everything
    "fuse_width": _at_least(1),
    "fuse_out": _at_least(1),
    "embed_dim": _at_least(1),
    "oce_blocks": _at_least(1),
    "decoder_dims": _at_least(1),
    "blocks_per_stage": _at_least(0),  # 0: the stage only upsamples (the fast preset's 64x64 stage)
    "vss_per_module": _at_least(1),
    "groups": _at_least(1),
    "d_state": _at_least(1),
    "ssm_expand": _at_least(1),
    "drop_path": _FRACTION,
    "fuser_drop_path": _FRACTION,
    "fuser_dropout": _FRACTION,
    "blur_sigma": _above(0),
    "score_topk": _at_least(1),
    "feature_smoothing": _at_least(1),
}
TRAIN_RANGES = {
    "epochs": _at_least(1),  # 0 would save an untrained model with a deployment threshold
    "batch_size": _at_least(1),
    "base_lr": _above(0),
    "weight_decay": _at_least(0),
    "betas": _FRACTION,
    "eps": _above(0),
    "clip_grad": _above(0),
    "lr_drop_at": _between(0, 1, high_in=True),
    "loss_weight": _above(0),
    "eval_every": _at_least(0),
    "eval_max_images": _at_least(0),
    "num_workers": _at_least(0),
    "threshold_holdout": _FRACTION,
    "threshold_min_images": _at_least(0),
    "threshold_false_alarm_rate": _between(0, 1, low_in=False),
    "threshold_quantile": _between(0, 1, low_in=False, high_in=True),
    "max_minutes": _at_least(0),
    "feature_noise": _at_least(0),
}


def _expected_type(annotation) -> str:
    names = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
    return names.get(annotation, str(annotation))


def _check_type(value, annotation, where: str) -> None:
    """ConfigError unless `value` has the type `annotation` (bool, int, float, str, tuple[X, ...] or tuple[X, Y])."""
    if typing.get_origin(annotation) is tuple:
        args = typing.get_args(annotation)
        fixed = args[-1] is not Ellipsis
        if not isinstance(value, tuple) or (fixed and len(value) != len(args)):
            count = f"{len(args)} values" if fixed else "values"
            raise ConfigError(f"config {where}: expected a list of {count} ({_expected_type(args[0])}), got {value!r}")
        for i, item in enumerate(value):
            _check_type(item, args[i] if fixed else args[0], f"{where}[{i}]")
        return
    if annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    elif annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, annotation)
    if not ok:
        raise ConfigError(f"config {where}: expected {_expected_type(annotation)}, got {value!r}")


def check_fields(config, where: str, ranges: dict | None = None) -> None:
    """ConfigError naming the field ("config model.d_state: expected an integer, got 16.5") unless every
    field of the dataclass `config` has its annotated type and, when `ranges` names it, its range."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        _check_type(value, hints[f.name], f"{where}.{f.name}")
        if ranges and f.name in ranges:
            test, expected = ranges[f.name]
            if not all(test(v) for v in (value if isinstance(value, tuple) else (value,))):
                which = "every value" if isinstance(value, tuple) else "a value"
                raise ConfigError(f"config {where}.{f.name}: expected {which} {expected}, got {value!r}")


def paper_preset() -> RunConfig:
    """MMAD as published: ResNet-34 encoder, 500 epochs, batch 8 (README "Architecture", "Training recipe")."""
    return RunConfig(model=ModelConfig(encoder="resnet34"), train=TrainConfig(), preset="paper")


def fast_preset() -> RunConfig:
    """Sized for a 2-core CPU: the offline EfficientNet-Lite0 encoder, a slim HMD, cached features.

    Same structure as the paper's model (DMF with dilated branches and VSS, HMD with HybridBlocks,
    grouped hilbert → zorder → zigzag scans in 8 directions), at half the widths and one HybridBlock
    per stage, except the 64×64 stage, which only upsamples (PatchExpand): its 12 scans of length
    4096 cost more than the rest of the decoder together on a CPU.
    """
    model = ModelConfig(
        encoder="efficientnet_lite0",
        fuse_width=64,
        fuse_out=128,
        embed_dim=256,
        decoder_dims=(256, 128, 64, 32),
        blocks_per_stage=(1, 1, 1, 0),
        normalize_features=True,
        feature_smoothing=3,  # issue 12: reconstruct 3×3 neighbourhood averages (training/README.md, §6.5)
        normalize_map=True,  # issue 12: fixed highlights stop scoring (training/README.md, "The fast preset")
    )
    train = TrainConfig(
        epochs=10,
        batch_size=8,
        loss="cosine",  # issue 12: train on the distance the map measures
        eval_every=2,  # curves: I-/P-AUROC every 2 epochs on an even spread of 80 test images per category
        eval_max_images=80,
        cache_features=True,
        max_minutes=30.0,
    )
    return RunConfig(model=model, train=train, preset="fast")


def tiny_preset() -> RunConfig:
    """The smallest model with every structural piece: for unit tests (random encoder weights)."""
    model = ModelConfig(
        encoder="efficientnet_lite0",
        fuse_width=16,
        fuse_out=32,
        embed_dim=32,
        oce_blocks=1,
        decoder_dims=(32, 16, 16, 8),
        blocks_per_stage=(1, 1, 1, 0),
        vss_per_module=(1, 1, 1, 1),
        d_state=4,
        normalize_features=True,
    )
    train = TrainConfig(epochs=1, batch_size=2, eval_every=0, cache_features=True)
    return RunConfig(model=model, train=train, preset="tiny")


PRESETS = {"paper": paper_preset, "fast": fast_preset, "tiny": tiny_preset}


def preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset '{name}', expected one of {sorted(PRESETS)}")
    return PRESETS[name]()
