"""`mmad bench`: its options and the call into the latency benchmark (argparse only at import time).

mmad bench  --model M [M ...] --report DIR [--backends ...] [--batch 1,4] [--iters N] [--warmup N]
            [--images DIR]
"""

from __future__ import annotations

import argparse
import logging
import sys

BENCH_EPILOG = """backends (--backends takes names or families: pytorch, onnxruntime, tensorrt):
  pytorch                    the checkpoint in PyTorch eager mode (the reference when a checkpoint is given)
  onnxruntime-portable       standard-ops ONNX on onnxruntime's CPU provider (-cuda: CUDA provider)
  onnxruntime-custom-op      SelectiveScan custom-op ONNX on the CPU (onnxruntime-extensions)
  tensorrt-fp32|fp16|int8    TensorRT engines with the SelectiveScan plugin (GPU, tensorrt package)
With a checkpoint folder, the graphs and engines not given as files are exported into REPORT/models/.
Backends this machine cannot run are listed in the report with the reason.

examples:
  mmad bench --model runs/bottle --report bench/ --images data/bottle
  mmad bench --model model.onnx model_fp16.engine --report bench/ --batch 1,4 --plugin-library libmmad_trt_plugins.so

exit codes: 0 report written, 1 report written but an FP32 backend deviates from the reference,
2 bad model, images or option."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `bench` to the `mmad` command."""
    p = subparsers.add_parser(
        "bench",
        help="latency of a model on every backend of this machine, with each backend's deviation",
        description="Per-stage latency (pre-processing, inference, post-processing) of one model on every "
        "backend available here, each backend's deviation from the reference on real images, and the "
        "environment: report.json, report.md and plots. Run it on a new device before trusting it.",
        epilog=BENCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model", nargs="+", required=True, help="a checkpoint folder and/or exported .onnx / .engine files"
    )
    p.add_argument("--report", required=True, help="folder for report.json, report.md, the plots (and exported models)")
    p.add_argument("--backends", help="comma-separated backends or families to run (default: every one available)")
    p.add_argument("--batch", default="1", help="batch sizes, comma-separated (default 1)")
    p.add_argument("--iters", type=int, default=30, help="timed iterations per backend and batch size (default 30)")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up iterations before them (default 5)")
    p.add_argument(
        "--images",
        help="a folder of images or a dataset root (MVTec layout; masks are skipped); default: generated frames",
    )
    p.add_argument("--max-images", type=int, default=8, help="images used, spread over the folder (default 8)")
    p.add_argument("--frame-size", metavar="WxH", help="resize the images to this camera frame size before timing")
    p.add_argument(
        "--threads", type=int, help="CPU threads for onnxruntime and PyTorch (default: the CPUs usable here)"
    )
    p.add_argument("--torch-device", default="cpu", help="device of the PyTorch backend: cpu (default), cuda, auto")
    p.add_argument("--op-library", help="onnxruntime custom-op library for a graph with the SelectiveScan op")
    p.add_argument(
        "--plugin-library", help="TensorRT plugin library (default: $MMAD_TRT_PLUGIN or the engine's sidecar)"
    )
    p.add_argument(
        "--calib-data",
        nargs="+",
        default=[],
        help="normal images calibrating a TensorRT INT8 engine (default: --images)",
    )
    p.add_argument("--no-plots", action="store_true", help="write no PNG plots")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=run_bench_command)


def run_bench_command(args: argparse.Namespace) -> int:
    """Run `mmad bench`; ConfigError -> message and exit code 2."""
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="mmad bench: %(message)s", stream=sys.stderr
    )
    from pathlib import Path

    from mmad.runtime.errors import ConfigError

    try:
        from mmad.runtime.bench.latency import (
            BenchConfig,
            main_exit_code,
            parse_batches,
            parse_frame_size,
            run_bench,
        )

        config = BenchConfig(
            models=list(args.model),
            report_dir=Path(args.report),
            backends=[b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else None,
            batches=parse_batches(args.batch),
            iters=args.iters,
            warmup=args.warmup,
            images=args.images,
            max_images=args.max_images,
            frame_size=parse_frame_size(args.frame_size) if args.frame_size else None,
            threads=args.threads,
            torch_device=args.torch_device,
            op_library=args.op_library,
            plugin_library=args.plugin_library,
            calib_data=list(args.calib_data) or ([args.images] if args.images else []),
            plots=not args.no_plots,
        )
        report = run_bench(config)
    except ConfigError as err:
        print(f"mmad bench: error: {err}", file=sys.stderr)
        return 2
    print(f"mmad bench: wrote {Path(args.report) / 'report.md'} and report.json")
    return main_exit_code(report)
