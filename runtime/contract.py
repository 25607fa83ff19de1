"""The contract between training, export, the plugins and the runtime: every name, tolerance, format
and rule that crosses a stage, defined once, here.

This module is the bottom layer of the project: it imports numpy, OpenCV and the runtime's error
class, never torch, and nothing of mmad.training, mmad.export or mmad.samples. Training and export
import it; the runtime reads models through it. The op's full contract is
plugins/selective_scan/README.md; the model it belongs to is described in training/README.md.

    The SelectiveScan op     SCAN_* names, attributes, input names, tolerances
    The exported model's I/O INPUT_*, OUTPUT_*, IMAGENET_MEAN/STD, resize_to_input()
    Model metadata           META_*: one writer (metadata_props) and one reader (read_metadata)
    Engine sidecar           EngineSidecar: one writer (write_sidecar) and one reader (read_sidecar)
    Tolerances               SCAN_TOL_*, MODEL_TOL_*, relative_max_diff()
    Thresholds               THRESHOLD_*: the keys a checkpoint stores, deployment_threshold(), fit_threshold(),
                             check_threshold() (finite, in the score's range: META "score_range")
    Calibration file         Calibration: one writer (write_calibration), one reader (read_calibration)
    Files written whole      atomic_write() (a temporary file beside the target, then os.replace)
    File identity            file_sha256()
    Plugin location          PLUGIN_ENV, PLUGIN_LIBRARY_NAME, PLUGIN_INSTALL_DIR (the trusted installed folder)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .errors import ConfigError

# --- The SelectiveScan op (plugins/selective_scan/README.md) ------------------------------------
SCAN_OP_TYPE = "SelectiveScan"
SCAN_OP_DOMAIN = "ai.onnx.contrib"
SCAN_OP_DOMAIN_VERSION = 1
SCAN_PLUGIN_NAME = "SelectiveScan"
SCAN_PLUGIN_VERSION = "1"
SCAN_PLUGIN_NAMESPACE = "mmad"
SCAN_ATTR_SOFTPLUS = "delta_softplus"
# Attribute names TensorRT's ONNX parser reads to find a node's plugin (fixed by TensorRT).
SCAN_ATTR_PLUGIN_NAMESPACE = "plugin_namespace"
SCAN_ATTR_PLUGIN_VERSION = "plugin_version"
SCAN_INPUTS = ("u", "delta", "A", "B", "C", "D", "delta_bias")

# --- Tolerances: max|impl - ref| / max|ref| (relative_max_diff) --------------------------------
# One scan against the float64 reference.
SCAN_TOL_FP32 = 1e-5
SCAN_TOL_FP16 = 5e-3
# The whole model (anomaly map and score) against PyTorch float32 on the same pre-processed images.
MODEL_TOL_FP32 = 1e-4
# TensorRT builds "FP32" engines with TF32 allowed (its default on Ampere and later, Orin included):
# matmuls and convolutions round their inputs to a 10-bit mantissa, so such an engine is held to this.
MODEL_TOL_TF32 = 1e-3
# FP16 graphs keep the scan in float32 behind casts; their maps move by about 2e-3 of the maximum. A CPU without
# FP16 arithmetic runs OpenVINO's FP16 hint in bfloat16 (8 mantissa bits to FP16's 11: 8x the rounding).
MODEL_TOL_FP16 = 1e-2
MODEL_TOL_BF16 = 8e-2


def relative_max_diff(values: np.ndarray, reference: np.ndarray) -> float:
    """max|values - reference| / max|reference| (absolute when the reference is all zeros)."""
    reference = np.asarray(reference, dtype=np.float64)
    scale = float(np.abs(reference).max()) if reference.size else 0.0
    diff = float(np.abs(np.asarray(values, dtype=np.float64) - reference).max()) if reference.size else 0.0
    return diff / (scale if scale > 0 else 1.0)


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file (read in 1 MiB blocks), hex: how checkpoint weights, shipped encoder weights and an
    engine's ONNX and plugin library are identified in metadata and sidecars."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- The exported model's I/O ------------------------------------------------------------------
# Input: RGB images, uint8, NHWC [B, H, W, 3], already resized by resize_to_input(); normalisation
# happens inside the graph, so no runtime can get it wrong.
INPUT_NAME = "image"
INPUT_LAYOUT = "NHWC"
INPUT_DTYPE = "uint8"
OUTPUT_MAP = "anomaly_map"  # [B, 1, H, W] float32, Gaussian-smoothed (sigma 4) reconstruction error
OUTPUT_SCORE = "score"  # [B] float32, max of the map

# ImageNet normalisation (torchvision convention), on 0..1 pixel values.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_to_input(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 [H, W, 3] image to size=(height, width): what training and every runtime do.

    INTER_AREA when shrinking (each output pixel averages the input pixels it covers, so fine texture
    does not alias), INTER_LINEAR when enlarging; the image is returned unchanged when it already has
    the size. Training feeds the model through this function too, so a deployed model sees its
    training images' pixels.
    """
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    shrinking = image.shape[0] > height or image.shape[1] > width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


# --- Model metadata ----------------------------------------------------------------------------
# ONNX metadata_props and an engine sidecar's "metadata" carry these keys, prefixed, as strings
# (JSON where structured).
META_PREFIX = "mmad."
META_KEYS = (
    "threshold",  # float: image-score threshold for deployment (deployment_threshold())
    "threshold_f1",  # float: F1-optimal threshold on the test labels (reporting)
    "image_size",  # int
    "input_layout",  # "NHWC"
    "input_dtype",  # "uint8"
    "mean",  # JSON list of 3 floats (0..1 scale), already applied inside the graph
    "std",  # JSON list of 3 floats
    "encoder",  # encoder name
    "arch",  # "mmad" or "mambaad"
    "model_version",  # package version that trained it
    "weights_sha256",  # hash of the safetensors weights
    "scan",  # "custom-op" or "portable"
    "precision",  # "fp32", "fp16" or "int8"
    "pixel_threshold",  # float: map values above it are drawn as regions (pixel_threshold(), normal maps)
    "threshold_rule",  # str: how "threshold" was set ("gumbel" for fit_threshold, "quantile" for older models)
    "threshold_images",  # int: how many held-out normal images "threshold" came from
    "category_thresholds",  # JSON {category: {"image": float, "pixel": float, "images": int}} (multi-category)
    "score_range",  # JSON [low, high]: every score and map value lies in it; thresholds outside it are refused
)
# What every exported graph carries; the rest may be absent (threshold_f1 exists only after `mmad
# eval`, and a checkpoint without thresholds has no threshold).
META_REQUIRED = ("image_size", "input_layout", "input_dtype", "mean", "std", "scan", "precision")


def metadata_props(values: Mapping[str, object]) -> dict[str, str]:
    """The writer: {key: value} -> {"mmad.key": "value"}; lists become JSON. ValueError on unknown keys."""
    unknown = sorted(set(values) - set(META_KEYS))
    if unknown:
        raise ValueError(f"metadata keys {unknown} are not in the contract's META_KEYS")
    return {META_PREFIX + k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}


def read_metadata(props: Mapping[str, object]) -> dict[str, str]:
    """The reader: the "mmad.*" entries of metadata props, keyed without the prefix, values as strings.

    Keys beyond META_KEYS (a newer exporter) are kept; structured values are re-encoded as JSON.
    """
    return {
        k[len(META_PREFIX) :]: v if isinstance(v, str) else json.dumps(v)
        for k, v in props.items()
        if k.startswith(META_PREFIX)
    }


# --- The TensorRT engine's sidecar -------------------------------------------------------------
# An engine only runs on the TensorRT release and GPU it was built for, and carries no metadata of
# its own, so the exporter writes `<engine>.json` beside it.
PLUGIN_ENV = "MMAD_TRT_PLUGIN"  # where the SelectiveScan TensorRT plugin library is, when not given
# The plugin library's file name, and the folder an installation puts it in (the Docker images, samples/install.sh):
# a sidecar may name a library there or in the engine's own folder (see mmad.runtime.backends.tensorrt_plugin).
PLUGIN_LIBRARY_NAME = "libmmad_trt_plugins.so"
PLUGIN_INSTALL_DIR = Path("/opt/mmad/lib")


@dataclass(frozen=True)
class EngineSidecar:
    """Where and for what an engine was built (fields None when the sidecar does not say).

    plugin_library is as written (relative to the engine's folder when it was inside it); metadata
    holds the model's "mmad.*" keys without the prefix.
    """

    path: Path | None = None  # the file it was read from; None: no sidecar was found
    tensorrt_version: str | None = None
    gpu: str | None = None
    compute_capability: str | None = None
    hardware_compatibility: str = "none"  # or "ampere+" / "same_compute_capability"
    precision: str | None = None
    strongly_typed: bool | None = None
    plugin_library: str | None = None
    plugin_sha256: str | None = None
    onnx: str | None = None
    onnx_sha256: str | None = None
    input: dict = field(default_factory=dict)  # name, dtype, layout, min/opt/max shapes
    threshold: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def plugin_path(self) -> Path | None:
        """The plugin library resolved against the sidecar's folder (None when it names none)."""
        if not self.plugin_library:
            return None
        base = self.path.parent if self.path is not None else Path(".")
        return base / self.plugin_library


def sidecar_path(engine: Path) -> Path:
    """Where an engine's sidecar is written: `model.engine.json`."""
    return engine.with_name(engine.name + ".json")


def find_sidecar(engine: Path) -> Path | None:
    """An engine's sidecar: `model.engine.json`, else `model.json` (renamed by hand); None if neither."""
    for candidate in (sidecar_path(engine), engine.with_suffix(".json")):
        if candidate.is_file():
            return candidate
    return None


def write_sidecar(engine: Path, sidecar: EngineSidecar) -> Path:
    """The writer: `<engine>.json`, metadata keys prefixed as in ONNX; returns its path."""
    obj = asdict(sidecar)
    del obj["path"]
    obj["metadata"] = metadata_props(sidecar.metadata)
    path = sidecar_path(engine)
    path.write_text(json.dumps(obj, indent=2))
    return path


def read_sidecar(engine: Path) -> EngineSidecar:
    """The reader: the engine's sidecar; an empty EngineSidecar when there is none.

    ConfigError naming the file when it is not JSON, or a field has the wrong type.
    """
    path = find_sidecar(engine)
    if path is None:
        return EngineSidecar()
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the engine sidecar ({err})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("metadata", {}), dict):
        raise ConfigError(f"{path}: expected a JSON object with a 'metadata' object")
    known = {f for f in EngineSidecar.__dataclass_fields__ if f != "path"}
    values = {k: v for k, v in obj.items() if k in known and v is not None}
    for key, value in values.items():
        _check_sidecar_field(path, key, value)
    values["metadata"] = read_metadata(obj.get("metadata", {}))
    return EngineSidecar(path=path, **values)


# What each sidecar field must hold (null is allowed for all; hardware_compatibility then reads "none").
HARDWARE_COMPATIBILITY = ("none", "ampere+", "same_compute_capability")
_TEXT = (lambda v: isinstance(v, str), "a string")
_SIDECAR_FIELDS: dict[str, tuple[Callable[[object], bool], str]] = {
    **dict.fromkeys(("tensorrt_version", "gpu", "compute_capability", "precision", "plugin_library", "onnx"), _TEXT),
    "onnx_sha256": _TEXT,
    "plugin_sha256": (lambda v: isinstance(v, str) and len(v) == 64 and set(v) <= set("0123456789abcdef"), "a sha256"),
    "hardware_compatibility": (lambda v: v in HARDWARE_COMPATIBILITY, "one of " + ", ".join(HARDWARE_COMPATIBILITY)),
    "strongly_typed": (lambda v: isinstance(v, bool), "true or false"),
    "input": (lambda v: isinstance(v, dict), "a JSON object"),
    "metadata": (lambda v: isinstance(v, dict), "a JSON object"),
    "threshold": (lambda v: type(v) in (int, float) and math.isfinite(v), "a finite number"),
}


def _check_sidecar_field(path: Path, key: str, value: object) -> None:
    """ConfigError naming the file and the field when `value` is not what the writer puts in `key`."""
    ok, expected = _SIDECAR_FIELDS[key]
    if not ok(value):
        raise ConfigError(f"{path}: engine sidecar field '{key}' must be {expected}, got {value!r}")


# --- Thresholds --------------------------------------------------------------------------------
# The keys of a checkpoint's "thresholds" in checkpoints written before the calibrated rule (still read:
# their deployment threshold is the 99 % quantile, rule "quantile"), and the F1-optimal one (test labels,
# reporting only). Newer checkpoints keep theirs as training.thresholds lays out; export writes META "threshold".
THRESHOLD_NORMAL = "normal_quantile"
THRESHOLD_NORMAL_Q = "normal_quantile_q"
THRESHOLD_NORMAL_COUNT = "normal_holdout_images"
THRESHOLD_F1 = "f1"
DEFAULT_THRESHOLD_QUANTILE = 0.99
# The calibrated rule (fit_threshold): the false-alarm rate a threshold is set for, and the fewest normal
# scores a fit is made from.
DEFAULT_FALSE_ALARM_RATE = 0.001
MIN_NORMAL_SCORES = 20
_EULER_GAMMA = 0.5772156649015329


# A threshold must be finite and in the model's score range (META "score_range"; >= SCORE_MIN, as an error is,
# when unknown): NaN or one above the highest score passes every frame, -1 flags every frame, all without a word.
SCORE_MIN = 0.0


def check_threshold(value: object, what: str, score_range: tuple[float, float] | None = None) -> float:
    """`value` as a float; ConfigError naming `what` unless it is a number (not text), finite, in `score_range`."""
    low, high = score_range if score_range is not None else (SCORE_MIN, math.inf)
    number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    if not math.isfinite(number) or not low <= number <= high:
        where = f"in the model's score range [{low:g}, {high:g}]" if score_range is not None else f">= {low:g}"
        raise ConfigError(f"{what} must be a finite number {where} (anomalous: score > threshold), got {value!r}")
    return number


def _normal_scores(normal_scores, minimum: int) -> np.ndarray:
    scores = np.asarray(normal_scores, dtype=np.float64)
    if scores.ndim != 1 or scores.size < minimum:
        raise ValueError(f"normal scores: expected at least {minimum} scores in a 1-D array, got shape {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("normal scores: contain NaN or inf (is the model or its input broken?)")
    return scores


def deployment_threshold(normal_scores, q: float = DEFAULT_THRESHOLD_QUANTILE) -> float:
    """The deployment threshold from held-out normal images only: their ``q``-quantile.

    Rule: an image is anomalous when ``score > threshold``. The threshold is
    ``np.quantile(normal_scores, q)`` (linear interpolation), so about a fraction ``1 - q`` of
    normal images is flagged and no defective image was needed to choose it. With fewer than
    ``1 / (1 - q)`` scores it is close to their max. normal_scores [M] float, M >= 1.
    """
    if not 0.0 < q <= 1.0:
        raise ValueError(f"q: expected 0 < q <= 1, got {q}")
    return float(np.quantile(_normal_scores(normal_scores, 1), q))


@dataclass(frozen=True)
class ThresholdFit:
    """A threshold fitted to known-good scores (fit_threshold), with what it expects."""

    threshold: float
    target_false_alarm_rate: float  # asked for
    expected_false_alarm_rate: float  # of the fitted distribution at `threshold` (<= target)
    count: int  # normal scores it was fitted to
    location: float  # Gumbel location mu
    scale: float  # Gumbel scale beta
    max_normal: float
    rule: str = "gumbel"

    def exceedance(self, score: float) -> float:
        """P(a normal score > score) under the fit."""
        return float(-np.expm1(-np.exp(-(score - self.location) / self.scale)))


def fit_threshold(normal_scores, false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE) -> ThresholdFit:
    """The image threshold for a target false-alarm rate, from scores of known-good images or frames.

    An image score is the maximum of an anomaly map, and maxima of many pixels follow an extreme-value
    (Gumbel) law, whose tail a few dozen scores estimate far better than their empirical quantile. Rule:
    fit a Gumbel distribution by the method of moments (scale = std·√6/π, location = mean − γ·scale), take
    its (1 − rate) quantile, and never go below the highest known-good score (no frame the user called
    good is flagged). Anomalous when ``score > threshold``. The expected false-alarm rate is the fit's; on
    scores with a lighter tail than Gumbel's (generated good frames: 0.3 % seen for 1 % predicted) it is an
    upper bound, which errs on the side of fewer false alarms than promised.

    ValueError (saying what is wrong) for fewer than MIN_NORMAL_SCORES scores, non-finite scores, scores
    that are all equal (nothing to fit: a broken model or a frozen source), or a rate outside (0, 1).
    """
    if not 0.0 < false_alarm_rate < 1.0:
        raise ValueError(f"false-alarm rate: expected 0 < rate < 1, got {false_alarm_rate}")
    scores = _normal_scores(normal_scores, MIN_NORMAL_SCORES)
    spread = float(scores.std(ddof=1))
    if not spread > 1e-9 * max(1.0, float(np.abs(scores).max())):
        raise ValueError(f"normal scores: all {scores.size} are equal ({scores[0]:.6g}); nothing to calibrate on")
    scale = spread * np.sqrt(6.0) / np.pi
    location = float(scores.mean()) - _EULER_GAMMA * scale
    fitted = location - scale * np.log(-np.log1p(-false_alarm_rate))
    fit = ThresholdFit(float(max(fitted, scores.max())), false_alarm_rate, 0.0, int(scores.size), location, scale,
                       float(scores.max()))  # fmt: skip
    return ThresholdFit(**{**asdict(fit), "expected_false_alarm_rate": fit.exceedance(fit.threshold)})


PIXEL_THRESHOLD_QUANTILE = 0.999


def pixel_threshold(normal_maps, q: float = PIXEL_THRESHOLD_QUANTILE) -> float:
    """The map value above which a pixel is drawn as part of a region: the ``q``-quantile of every pixel of
    anomaly maps of known-good images (so about 1 - q of a good image's pixels exceed it). Regions are drawn
    only on frames whose score is over the image threshold, so a good frame shows none.

    normal_maps: float [M, H, W] (or any shape), finite. ValueError when empty or not finite.
    """
    values = np.asarray(normal_maps, dtype=np.float64).ravel()
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError("normal maps: expected finite values, got none or NaN/inf")
    if not 0.0 < q < 1.0:
        raise ValueError(f"q: expected 0 < q < 1, got {q}")
    return float(np.quantile(values, q))


# --- The calibration file ----------------------------------------------------------------------
# `mmad calibrate` writes the thresholds measured on site beside the model, one file per camera or
# category; every backend, `mmad stream` and `mmadinfer` read it instead of the model's own threshold.
CALIBRATION_SUFFIX = ".calibration.json"


@dataclass(frozen=True)
class Calibration:
    """Thresholds measured on known-good frames of the real source."""

    image_threshold: float
    pixel_threshold: float | None  # map values above it are drawn as regions; None: the image threshold
    fit: dict  # ThresholdFit's fields (rule, rates, count, location, scale, max_normal)
    frames: int
    source: str
    backend: str
    model_sha256: str
    category: str | None = None
    created: str = ""


def calibration_path(model: Path, name: str | None = None) -> Path:
    """`model.onnx.calibration.json`, or `model.onnx.<name>.calibration.json` for one camera/category."""
    model = Path(model)
    return model.with_name(f"{model.name}.{name}{CALIBRATION_SUFFIX}" if name else model.name + CALIBRATION_SUFFIX)


def atomic_write(path: str | Path, write: Callable[[str], object]) -> Path:
    """Call `write(temporary path)` for a new file beside `path`, flush it to disk, then rename it to `path`: a
    crash, a kill or a full disk never leaves a half-written `path` (the temporary file is removed on failure)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(str(tmp))
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_calibration(path: Path, calibration: Calibration) -> Path:
    """The writer: JSON, replaced atomically (a reader never sees half a file)."""
    text = json.dumps(asdict(calibration), indent=2, allow_nan=False)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def read_calibration(path: Path) -> Calibration:
    """The reader; ConfigError naming the file when it is not a calibration or a threshold is not finite."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
        calibration = Calibration(**obj)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError) as err:
        raise ConfigError(f"{path}: not a readable calibration file ({err}); run mmad calibrate again") from None
    for name in ("image_threshold", "pixel_threshold"):
        value = getattr(calibration, name)
        if value is None and name == "pixel_threshold":
            continue
        check_threshold(value, f"{path}: {name}")
    return calibration
