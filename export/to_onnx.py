"""Export a training checkpoint to an end-to-end ONNX graph.

    python export/to_onnx.py --checkpoint RUN --out model.onnx [--portable] [--precision fp32|fp16|int8]
        [--calib-data ROOT ...] [--calib-images 32]

Input `image` uint8 [B, 256, 256, 3] RGB (normalisation inside); outputs `anomaly_map`
[B, 1, 256, 256] and `score` [B]; dynamic batch. Default: one SelectiveScan custom-op node per scan
(TensorRT plugin, or onnxruntime-extensions on a CPU); --portable: standard ONNX ops only.
--precision fp16 keeps the scan in float32; int8 inserts Q/DQ around Conv/MatMul/Gemm, calibrated
on the normal training images of --calib-data. See mmad.export.onnx_export.
Exit codes: 0 written, 2 bad input (checkpoint, data, option).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint folder written by mmad train")
    p.add_argument("--out", required=True, help="ONNX file to write")
    p.add_argument("--portable", action="store_true", help="standard ONNX ops only (no SelectiveScan custom op)")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32")
    p.add_argument(
        "--calib-data",
        nargs="+",
        default=[],
        help="int8: dataset root(s) or image folder(s) whose normal training images calibrate",
    )
    p.add_argument("--calib-images", type=int, default=32, help="int8: calibration images (default 32)")
    p.add_argument("--calib-method", choices=["minmax", "percentile", "entropy"], default="minmax")
    p.add_argument("--opset", type=int, default=17)


def run_command(args: argparse.Namespace) -> int:
    from mmad.export.onnx_export import build_onnx

    try:
        result = build_onnx(
            args.checkpoint,
            args.out,
            portable=args.portable,
            precision=args.precision,
            calib_data=args.calib_data,
            calib_images=args.calib_images,
            calib_method=args.calib_method,
            opset=args.opset,
        )
    except (ValueError, ImportError) as err:  # ExportError, CheckpointError, DataError, a missing package
        print(f"to_onnx: error: {err}", file=sys.stderr)
        return 2
    meta = result.metadata
    size_mb = Path(result.path).stat().st_size / 2**20
    print(
        f"wrote {result.path} ({size_mb:.1f} MB): {meta['scan']} scan ({result.scan_nodes} calls), "
        f"{meta['precision']}, threshold {meta.get('threshold', 'none')}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python export/to_onnx.py", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
