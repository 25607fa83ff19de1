"""Build a TensorRT engine from an exported ONNX graph, with the SelectiveScan plugin loaded.

    python export/to_trt.py --onnx model.onnx --out model.engine [--precision fp32|fp16|int8]
        [--plugins libmmad_trt_plugins.so] [--calib-dir DIR] [--batch MIN,OPT,MAX] [--workspace MB]

Writes the engine and its sidecar `<engine>.json` (TensorRT version, GPU, precision, plugin hash,
input shapes, threshold, metadata). TensorRT 10.x and 11.x; see mmad.export.trt_engine.
Exit codes: 0 built; 2 bad request or environment (no TensorRT, no GPU, plugin missing or for
another TensorRT, ONNX missing/corrupt/without metadata, INT8 without calibration data);
1 TensorRT failed to parse or build.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--onnx", required=True, help="graph from python export/to_onnx.py")
    p.add_argument("--out", required=True, help="engine file to write (its sidecar goes to <out>.json)")
    p.add_argument(
        "--precision",
        choices=["fp32", "fp16", "int8"],
        help="engine precision (default: the ONNX's); int8 needs a Q/DQ ONNX or --calib-dir",
    )
    p.add_argument("--plugins", help="TensorRT plugin library with SelectiveScan (default: $MMAD_TRT_PLUGIN)")
    p.add_argument(
        "--calib-dir",
        nargs="+",
        default=[],
        help="dataset root(s) or image folder(s) whose normal images calibrate INT8",
    )
    p.add_argument("--calib-images", type=int, default=32, help="calibration images (default 32)")
    p.add_argument("--batch", default="1,1,8", help="dynamic batch range MIN,OPT,MAX (default 1,1,8)")
    p.add_argument("--workspace", type=int, default=2048, help="builder workspace in MB (default 2048)")


def run_command(args: argparse.Namespace) -> int:
    from mmad.export.onnx_graph import ExportError
    from mmad.export.trt_engine import EngineBuildError, EngineRequest, build_engine, check_request, parse_batch

    try:
        request = EngineRequest(
            onnx=Path(args.onnx),
            out=Path(args.out),
            precision=args.precision,
            plugins=Path(args.plugins) if args.plugins else None,
            calib_dir=[Path(d) for d in args.calib_dir],
            calib_images=args.calib_images,
            batch=parse_batch(args.batch),
            workspace_mb=args.workspace,
        )
        sidecar = build_engine(check_request(request))
    except ExportError as err:
        print(f"to_trt: error: {err}", file=sys.stderr)
        return 2
    except EngineBuildError as err:
        print(f"to_trt: error: {err}", file=sys.stderr)
        return 1
    print(
        f"wrote {args.out} ({sidecar['precision']}, TensorRT {sidecar['tensorrt_version']}, {sidecar['gpu']}) "
        f"and {args.out}.json"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python export/to_trt.py", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
