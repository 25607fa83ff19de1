"""Export a training checkpoint to an end-to-end ONNX graph.

    python export/to_onnx.py --checkpoint RUN --out model.onnx [--portable] [--precision fp32|fp16|int8]
        [--calib-data ROOT ...] [--calib-images 32]

Input `image` uint8 [B, 256, 256, 3] RGB (normalisation inside); outputs `anomaly_map`
[B, 1, 256, 256] and `score` [B]; dynamic batch. Default: one SelectiveScan custom-op node per scan
(TensorRT plugin, or onnxruntime-extensions on a CPU); --portable: standard ONNX ops only.
--precision fp16 keeps the scan in float32; int8 inserts Q/DQ around Conv/MatMul/Gemm, calibrated
on the normal training images of --calib-data. See mmad.export.onnx_export; `mmad export onnx`
takes the same options.
Exit codes: 0 written, 2 bad input (checkpoint, data, option).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from mmad.export.command import (
    DEFAULT_OPSET,
    PRECISIONS,
    Script,
    calib_images_option,
    calib_method_option,
    checkpoint_option,
)
from mmad.runtime.options import calib_data_option, option


@dataclass
class OnnxExportConfig:
    """What `python export/to_onnx.py` is asked for: build_onnx's arguments, each the option of that name."""

    checkpoint: str = checkpoint_option()
    out: str = option(metavar="ONNX", help="ONNX file to write")
    portable: bool = option(False, help="standard ONNX ops only (no SelectiveScan custom op)")
    precision: str = option("fp32", choices=PRECISIONS, help="precision of the graph")
    calib_data: list[str] = calib_data_option()
    calib_images: int = calib_images_option()
    calib_method: str = calib_method_option()
    opset: int = option(DEFAULT_OPSET, metavar="N", help="ONNX opset of the graph")


def export(config: OnnxExportConfig) -> int:
    from mmad.export.onnx_export import build_onnx

    result = build_onnx(**asdict(config))
    meta = result.metadata
    size_mb = Path(result.path).stat().st_size / 2**20
    print(
        f"wrote {result.path} ({size_mb:.1f} MB): {meta['scan']} scan ({result.scan_nodes} calls), "
        f"{meta['precision']}, threshold {meta.get('threshold', 'none')}"
    )
    return 0


SCRIPT = Script("to_onnx", __doc__, OnnxExportConfig, export)

if __name__ == "__main__":
    sys.exit(SCRIPT.main())
