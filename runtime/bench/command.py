"""`mmad bench`: its options, made from BenchConfig's fields (config.py), and the call into the run.

mmad bench  --model M [M ...] --report DIR [--backends ...] [--batch 1,4] [--iters N] [--warmup N]
            [--images DIR] [--profile]
"""

from __future__ import annotations

import argparse

from mmad.runtime.bench.config import BenchConfig
from mmad.runtime.options import add_command, config_from_args, log_to_stderr

BENCH_EPILOG = """backends (--backends takes names or families: pytorch, onnxruntime, openvino, tensorrt):
  pytorch                    the checkpoint in PyTorch eager mode (the reference when a checkpoint is given)
  onnxruntime-portable       standard-ops ONNX on onnxruntime's CPU provider (-cuda: CUDA provider)
  onnxruntime-custom-op      SelectiveScan custom-op ONNX on the CPU (onnxruntime-extensions)
  openvino-fp32|fp16         the custom-op ONNX in OpenVINO on the CPU, with the SelectiveScan extension
  tensorrt-fp32|fp16|int8    TensorRT engines with the SelectiveScan plugin (GPU, tensorrt package)
With a checkpoint folder, the graphs and engines not given as files are exported into REPORT/models/;
an INT8 engine is calibrated on --calib-data, else on --images.
Backends this machine cannot run are listed in the report with the reason.

examples:
  mmad bench --model runs/bottle --report bench/ --images data/bottle
  mmad bench --model model.onnx model_fp16.engine --report bench/ --batch 1,4 --plugin-library libmmad_trt_plugins.so
  mmad bench --model runs/bottle --report bench/ --threads 2 --profile    # + time by op type per backend

exit codes: 0 report written, 1 report written but an FP32 backend deviates from the reference,
2 bad model, images or option."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `bench` to the `mmad` command."""
    add_command(
        subparsers,
        "bench",
        BenchConfig,
        run_bench_command,
        help="latency of a model on every backend of this machine, with each backend's deviation",
        description="Per-stage latency (pre-processing, inference, post-processing) of one model on every "
        "backend available here, each backend's deviation from the reference on real images, and the "
        "environment: report.json, report.md and plots. Run it on a new device before trusting it.",
        epilog=BENCH_EPILOG,
    )


def run_bench_command(args: argparse.Namespace) -> int:
    """Run `mmad bench` (a ConfigError becomes a message and exit code 2 in the `mmad` command)."""
    log_to_stderr("bench", args.verbose)
    from mmad.runtime.bench.run import main_exit_code, run_bench

    calib_data = list(args.calib_data) or ([args.images] if args.images else [])
    config = config_from_args(BenchConfig, args, calib_data=calib_data)
    report = run_bench(config)
    print(f"mmad bench: wrote {config.report_dir / 'report.md'} and report.json")
    return main_exit_code(report)
