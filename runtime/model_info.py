"""What the runtime needs to know about an exported model, read from its metadata.

The exporter writes the contract's META_KEYS (mmad.runtime.contract: "mmad."-prefixed, one writer)
into the ONNX metadata_props, and the same dictionary into a TensorRT engine's JSON sidecar; the
contract's one reader (read_metadata / read_sidecar) takes them back. Everything here is read from
there, so a new export with another image size or threshold drops in unchanged.

The thresholds a loaded model runs with come from one of, first found:
    an on-site calibration file    (`mmad calibrate`: contract.Calibration, beside the model)
    the metadata of one category   ("category_thresholds", picked with a category name)
    the model's metadata           ("threshold", "pixel_threshold")
with_thresholds() makes that choice (load_backend calls it); `threshold_source` says which it was.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

from mmad.runtime.contract import (
    INPUT_DTYPE,
    INPUT_LAYOUT,
    INPUT_NAME,
    META_PREFIX,
    OUTPUT_MAP,
    OUTPUT_SCORE,
    Calibration,
    calibration_path,
    check_threshold,
    file_sha256,
    read_calibration,
    read_metadata,
)

from .errors import ConfigError

# The largest image side a model's metadata may ask frames to be resized to: an 8192² RGB frame is 200 MB.
# (A side of 100000 would make every frame a 30 GB allocation.)
MAX_IMAGE_SIDE = 8192


@dataclass(frozen=True)
class ModelInfo:
    """The model's input spec and deployment thresholds.

    The input is `input_name`, uint8 NHWC [B, height, width, 3] RGB; the outputs are
    `map_name` [B, 1, height, width] float32 and `score_name` [B] float32.
    """

    source: str  # the file it came from, for messages
    height: int
    width: int
    threshold: float | None  # image threshold; None when nothing gives one: the user must
    input_name: str = INPUT_NAME
    map_name: str = OUTPUT_MAP
    score_name: str | None = OUTPUT_SCORE  # None: the score is computed from the map
    metadata: Mapping[str, str] = field(default_factory=dict)  # the "mmad.*" keys, prefix removed
    pixel_threshold: float | None = None  # map values above it are regions; None: use the image threshold
    threshold_source: str = "model metadata"  # where the thresholds came from, for logs and stats
    categories: tuple[str, ...] = ()  # the categories the metadata has thresholds for ("category_thresholds")
    score_range: tuple[float, float] | None = None  # every score lies in it (metadata "score_range"); None: unknown

    def check_threshold(self, value: object, what: str = "--threshold") -> float:
        """A threshold given for this model (e.g. --threshold) as a float; ConfigError unless it is finite and
        in the model's score range (contract.check_threshold)."""
        return check_threshold(value, what, self.score_range)

    @property
    def scan(self) -> str:
        """ "custom-op" (needs the SelectiveScan op library / TensorRT plugin) or "portable"."""
        return self.metadata.get("scan", "portable")


def _parse_threshold(meta: Mapping[str, str], key: str, source: str) -> float | None:
    """A metadata threshold; None when absent. ConfigError unless it is a finite number in the model's score
    range (a threshold of NaN would pass every frame without a word, -1 flag every one)."""
    value = meta.get(key)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{source}: metadata {META_PREFIX}{key}={value!r} is not a number") from None
    if not math.isfinite(number):
        raise ConfigError(f"{source}: metadata {META_PREFIX}{key}={value!r} is not a finite number")
    return check_threshold(number, f"{source}: metadata {META_PREFIX}{key}", _score_range(meta, source))


def _score_range(meta: Mapping[str, str], source: str) -> tuple[float, float] | None:
    """The metadata's "score_range" as (low, high); None when absent. ConfigError naming `source` unless it is
    JSON [low, high], finite, low < high (a normalised map may go below contract.SCORE_MIN)."""
    text = meta.get("score_range")
    if text is None:
        return None
    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        values = None
    numbers = isinstance(values, list) and len(values) == 2 and all(_is_number(v) for v in values)
    if not numbers or not values[0] < values[1]:
        raise ConfigError(f"{source}: metadata {META_PREFIX}score_range={text!r}: expected [low, high], low < high")
    return float(values[0]), float(values[1])


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class CategoryThresholds:
    """One category's entry of the metadata's "category_thresholds"."""

    image: float
    pixel: float | None  # None: the image threshold
    images: int | None  # held-out normal images it came from


def _finite(
    value: object, where: str, source: str, score_range: tuple[float, float] | None, optional: bool = False
) -> float | None:
    """A threshold in "category_thresholds"; ConfigError naming the entry unless finite and in the score range
    (or None when optional)."""
    if value is None and optional:
        return None
    return check_threshold(value, f"{source}: metadata {META_PREFIX}category_thresholds: {where}", score_range)


def category_thresholds(meta: Mapping[str, str], source: str) -> dict[str, CategoryThresholds]:
    """The metadata's per-category thresholds ({} when it has none); ConfigError when they are malformed.

    "category_thresholds" is JSON {category: {"image": float, "pixel": float, "images": int}} (contract.META_KEYS).
    """
    text = meta.get("category_thresholds")
    if not text:
        return {}
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{source}: metadata {META_PREFIX}category_thresholds is not JSON ({err})") from None
    if not isinstance(entries, dict) or not all(isinstance(e, dict) for e in entries.values()):
        expected = "{category: {image, pixel, images}}"
        raise ConfigError(
            f"{source}: metadata {META_PREFIX}category_thresholds: expected {expected}, got {text[:80]!r}"
        )
    found, score_range = {}, _score_range(meta, source)
    for name, entry in entries.items():
        images = entry.get("images")
        found[str(name)] = CategoryThresholds(
            image=_finite(entry.get("image"), f"{name}.image", source, score_range),
            pixel=_finite(entry.get("pixel"), f"{name}.pixel", source, score_range, optional=True),
            images=int(images) if isinstance(images, (int, float)) and not isinstance(images, bool) else None,
        )
    return found


def _size_from_shape(shape: Sequence[object] | None) -> tuple[int, int] | None:
    """(H, W) from a static NHWC input shape such as [None, 256, 256, 3]; None when dynamic."""
    if shape is None or len(shape) != 4:
        return None
    h, w = shape[1], shape[2]
    if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
        return int(h), int(w)
    return None


def model_info_from_metadata(
    props: Mapping[str, object],
    *,
    source: str,
    input_names: Sequence[str],
    output_names: Sequence[str],
    input_shape: Sequence[object] | None = None,
    output_shapes: Mapping[str, Sequence[object] | None] | None = None,
) -> ModelInfo:
    """Build a ModelInfo from a model's metadata props ("mmad.*" keys, as ONNX stores them) and its I/O.

    The props are read with the contract's reader (contract.read_metadata); the rest is
    model_info_from_keys.
    """
    return model_info_from_keys(
        read_metadata(props),
        source=source,
        input_names=input_names,
        output_names=output_names,
        input_shape=input_shape,
        output_shapes=output_shapes,
    )


def outputs_error(source: str, found: str) -> ConfigError:
    """The error for a model whose outputs are not the contract's (`found` describes them), naming the model."""
    return ConfigError(
        f"{source}: the model's outputs do not follow the contract: expected {OUTPUT_MAP!r} float32 [B, 1, H, W] "
        f"and {OUTPUT_SCORE!r} float32 [B], got {found}; is it an MMAD export (python export/to_onnx.py)?"
    )


def _check_output_shapes(shapes: Mapping[str, Sequence[object] | None], source: str) -> None:
    """outputs_error when an output's shape, where the model states it (dimensions may be symbolic), cannot be
    the anomaly map [B, 1, H, W] or the score [B]."""
    found = {name: list(shapes[name]) for name in (OUTPUT_MAP, OUTPUT_SCORE) if shapes.get(name) is not None}
    map_shape, score_shape = found.get(OUTPUT_MAP), found.get(OUTPUT_SCORE)
    map_ok = map_shape is None or (len(map_shape) == 4 and (map_shape[1] == 1 or not isinstance(map_shape[1], int)))
    if not map_ok or (score_shape is not None and len(score_shape) != 1):
        raise outputs_error(source, ", ".join(f"{name!r} {shape}" for name, shape in found.items()))


def _image_size(meta: Mapping[str, str], input_shape: Sequence[object] | None, source: str) -> tuple[int, int]:
    """(H, W) from the metadata's image_size, else from a static input shape; ConfigError when neither says,
    when image_size is not an integer in 1..MAX_IMAGE_SIDE, or when it differs from the static input shape
    (checked before any frame is resized to it)."""
    size = _size_from_shape(input_shape)
    if "image_size" in meta:
        key, text = f"{META_PREFIX}image_size", meta["image_size"]
        try:
            side = int(text)
        except ValueError:
            raise ConfigError(f"{source}: metadata {key}={text!r} is not an integer") from None
        if not 1 <= side <= MAX_IMAGE_SIDE:
            raise ConfigError(f"{source}: metadata {key}={text!r}: expected an image side in 1..{MAX_IMAGE_SIDE}")
        if size is not None and size != (side, side):
            raise ConfigError(
                f"{source}: metadata {key}={text!r} does not match the model's input {INPUT_NAME!r} "
                f"{list(input_shape)}: expected [B, {side}, {side}, 3]"
            )
        return side, side
    if size is None:
        raise ConfigError(
            f"{source}: cannot tell the input size: no {META_PREFIX}image_size metadata and the input "
            f"shape {list(input_shape) if input_shape is not None else None} is not a static [B, H, W, 3]"
        )
    return size


def model_info_from_keys(
    meta: Mapping[str, str],
    *,
    source: str,
    input_names: Sequence[str],
    output_names: Sequence[str],
    input_shape: Sequence[object] | None = None,
    output_shapes: Mapping[str, Sequence[object] | None] | None = None,
) -> ModelInfo:
    """Build a ModelInfo from metadata already read (keys without the prefix: read_metadata's result, or
    an EngineSidecar's `metadata`) and the model's I/O names, input shape and output shapes (where known).

    The image size comes from the metadata (`image_size`), else from a static input shape. Keys beyond
    META_KEYS (a newer exporter) are kept, unused. Raises ConfigError naming the model file when the
    I/O does not follow the contract.
    """
    if INPUT_NAME not in input_names:
        raise ConfigError(f"{source}: expected an input named {INPUT_NAME!r}, found {list(input_names)}")
    if OUTPUT_MAP not in output_names:
        raise ConfigError(f"{source}: expected an output named {OUTPUT_MAP!r}, found {list(output_names)}")
    _check_output_shapes(output_shapes or {}, source)
    for key, expected in (("input_layout", INPUT_LAYOUT), ("input_dtype", INPUT_DTYPE)):
        if key in meta and meta[key] != expected:
            raise ConfigError(f"{source}: metadata {META_PREFIX}{key}={meta[key]!r}, the runtime expects {expected!r}")
    height, width = _image_size(meta, input_shape, source)
    threshold = _parse_threshold(meta, "threshold", source)
    return ModelInfo(
        source=source,
        height=height,
        width=width,
        threshold=threshold,
        score_name=OUTPUT_SCORE if OUTPUT_SCORE in output_names else None,
        metadata=dict(meta),
        pixel_threshold=_parse_threshold(meta, "pixel_threshold", source),
        threshold_source="model metadata" if threshold is not None else "none (no threshold in the model's metadata)",
        categories=tuple(category_thresholds(meta, source)),
        score_range=_score_range(meta, source),
    )


# --- The thresholds a loaded model runs with ---------------------------------------------------
def with_thresholds(
    info: ModelInfo, model: Path, calibration: str | Path | bool | None = None, category: str | None = None
) -> ModelInfo:
    """`info` with the thresholds to run with: a calibration file's, else one category's, else the metadata's.

    calibration: None looks for the calibration file beside `model` (contract.calibration_path: with a
        category, `model.<category>.calibration.json` first, then `model.calibration.json`); a path must
        exist; False ignores calibration files (the metadata only: what `mmad calibrate` itself starts from);
        True is None.
    category: a category's thresholds: a calibration file's for it, else the metadata's "category_thresholds".
    ConfigError: a missing or unreadable calibration file, one made for another model file (its sha256
    differs: a stale calibration fails closed) or another category, or an unknown category (the known
    ones named).
    """
    model = Path(model)
    chosen = _calibration_file(model, calibration, category)
    if chosen is not None:
        return _from_calibration(info, model, chosen, category)
    if category is None:
        return info
    entries = category_thresholds(info.metadata, info.source)
    if category not in entries:
        known = ", ".join(entries) if entries else "none: the model has one threshold for every category"
        raise ConfigError(
            f"--category {category}: {model.name} has no thresholds for it (categories in its metadata: {known}; "
            f"calibrated: none found as {calibration_path(model, category).name}); calibrate it with "
            f"mmad calibrate --model {model} --category {category} --source ..."
        )
    entry = entries[category]
    return replace(
        info,
        threshold=entry.image,
        pixel_threshold=entry.pixel,
        threshold_source=f"model metadata, category {category}",
    )


def _calibration_file(model: Path, calibration: str | Path | bool | None, category: str | None) -> Path | None:
    """The calibration file to use, or None (the metadata's thresholds)."""
    if calibration is False:
        return None
    if calibration is not None and calibration is not True:
        path = Path(calibration)
        if not path.is_file():
            raise ConfigError(f"--calibration {path}: no such file")
        return path
    for path in ([calibration_path(model, category)] if category else []) + [calibration_path(model)]:
        if path.is_file():
            if category and path == calibration_path(model) and read_calibration(path).category != category:
                continue  # the model's default calibration is for another (or no) category
            return path
    return None


def _from_calibration(info: ModelInfo, model: Path, path: Path, category: str | None) -> ModelInfo:
    """`info` with a calibration file's thresholds, after checking it was made for this model (and category)."""
    cal: Calibration = read_calibration(path)
    if cal.model_sha256 != file_sha256(model):
        raise ConfigError(
            f"{path}: this calibration was made for another model file (sha256 {cal.model_sha256[:12]}…, "
            f"{model.name} has {file_sha256(model)[:12]}…); recalibrate: mmad calibrate --model {model} --source ..."
        )
    if category is not None and cal.category not in (None, category):
        raise ConfigError(f"{path}: this calibration is for category {cal.category}, not {category}")
    for name in ("image_threshold", "pixel_threshold"):
        if getattr(cal, name) is not None:
            info.check_threshold(getattr(cal, name), f"{path}: {name}")
    where = path.name if path.parent.resolve() == model.parent.resolve() else str(path)
    return replace(
        info,
        threshold=float(cal.image_threshold),
        pixel_threshold=None if cal.pixel_threshold is None else float(cal.pixel_threshold),
        threshold_source=f"calibration {where}" + (f", category {cal.category}" if cal.category else ""),
    )
