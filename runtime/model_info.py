"""What the runtime needs to know about an exported model, read from its metadata.

The exporter writes the contract's META_KEYS (mmad.runtime.contract: "mmad."-prefixed, one writer)
into the ONNX metadata_props, and the same dictionary into a TensorRT engine's JSON sidecar; the
contract's one reader (read_metadata / read_sidecar) takes them back. Everything here is read from
there, so a new export with another image size or threshold drops in unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from mmad.runtime.contract import (
    INPUT_DTYPE,
    INPUT_LAYOUT,
    INPUT_NAME,
    META_PREFIX,
    OUTPUT_MAP,
    OUTPUT_SCORE,
    read_metadata,
)

from .errors import ConfigError


@dataclass(frozen=True)
class ModelInfo:
    """The model's input spec and deployment threshold.

    The input is `input_name`, uint8 NHWC [B, height, width, 3] RGB; the outputs are
    `map_name` [B, 1, height, width] float32 and `score_name` [B] float32.
    """

    source: str  # the file it came from, for messages
    height: int
    width: int
    threshold: float | None  # None when the metadata has none: the user must give one
    input_name: str = INPUT_NAME
    map_name: str = OUTPUT_MAP
    score_name: str | None = OUTPUT_SCORE  # None: the score is computed from the map
    metadata: Mapping[str, str] = field(default_factory=dict)  # the "mmad.*" keys, prefix removed

    @property
    def scan(self) -> str:
        """ "custom-op" (needs the SelectiveScan op library / TensorRT plugin) or "portable"."""
        return self.metadata.get("scan", "portable")


def _parse_float(value: str | None, key: str, source: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{source}: metadata {META_PREFIX}{key}={value!r} is not a number") from None


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
    )


def _image_size(meta: Mapping[str, str], input_shape: Sequence[object] | None, source: str) -> tuple[int, int]:
    """(H, W) from the metadata's image_size, else from a static input shape; ConfigError when neither says."""
    if "image_size" in meta:
        try:
            side = int(meta["image_size"])
        except ValueError:
            raise ConfigError(
                f"{source}: metadata {META_PREFIX}image_size={meta['image_size']!r} is not an integer"
            ) from None
        return side, side
    size = _size_from_shape(input_shape)
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
) -> ModelInfo:
    """Build a ModelInfo from metadata already read (keys without the prefix: read_metadata's result, or
    an EngineSidecar's `metadata`) and the model's I/O names and input shape.

    The image size comes from the metadata (`image_size`), else from a static input shape. Keys beyond
    META_KEYS (a newer exporter) are kept, unused. Raises ConfigError naming the model file when the
    I/O does not follow the contract.
    """
    if INPUT_NAME not in input_names:
        raise ConfigError(f"{source}: expected an input named {INPUT_NAME!r}, found {list(input_names)}")
    if OUTPUT_MAP not in output_names:
        raise ConfigError(f"{source}: expected an output named {OUTPUT_MAP!r}, found {list(output_names)}")
    for key, expected in (("input_layout", INPUT_LAYOUT), ("input_dtype", INPUT_DTYPE)):
        if key in meta and meta[key] != expected:
            raise ConfigError(f"{source}: metadata {META_PREFIX}{key}={meta[key]!r}, the runtime expects {expected!r}")
    height, width = _image_size(meta, input_shape, source)
    return ModelInfo(
        source=source,
        height=height,
        width=width,
        threshold=_parse_float(meta.get("threshold"), "threshold", source),
        score_name=OUTPUT_SCORE if OUTPUT_SCORE in output_names else None,
        metadata=dict(meta),
    )
