"""Names shared by training, export, the plugin tests and the runtime: defined once, here.

Torch-free on purpose, so the runtime (which never imports torch) can read it.
"""

from __future__ import annotations

# --- The SelectiveScan op (shared/docs/SELECTIVE_SCAN_OP.md) -----------------------------------
SCAN_OP_TYPE = "SelectiveScan"
SCAN_OP_DOMAIN = "ai.onnx.contrib"
SCAN_OP_DOMAIN_VERSION = 1
SCAN_PLUGIN_NAME = "SelectiveScan"
SCAN_PLUGIN_VERSION = "1"
SCAN_PLUGIN_NAMESPACE = "mmad"
SCAN_ATTR_SOFTPLUS = "delta_softplus"
SCAN_INPUTS = ("u", "delta", "A", "B", "C", "D", "delta_bias")
# Tolerances: max|impl - ref| / max|ref|, reference in float64.
SCAN_TOL_FP32 = 1e-5
SCAN_TOL_FP16 = 5e-3

# --- The exported model's I/O ------------------------------------------------------------------
# Input: RGB images, uint8, NHWC [B, H, W, 3]; resizing to H x W happens before, normalisation
# inside the graph, so no runtime can get it wrong.
INPUT_NAME = "image"
INPUT_LAYOUT = "NHWC"
INPUT_DTYPE = "uint8"
OUTPUT_MAP = "anomaly_map"  # [B, 1, H, W] float32, Gaussian-smoothed (sigma 4) reconstruction error
OUTPUT_SCORE = "score"  # [B] float32, max of the map

# ONNX metadata_props keys (string values; JSON where structured).
META_PREFIX = "mmad."
META_KEYS = (
    "threshold",  # float: image-score threshold for deployment (normal-only rule)
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
)

# ImageNet normalisation (torchvision convention), on 0..1 pixel values.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
