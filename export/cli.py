"""`mmad export …`: the export scripts as subcommands, each with its script's typed options
(mmad.export.command.Script). Light at import: the work imports torch, onnx or TensorRT when it runs.

    mmad export onnx       --checkpoint RUN --out model.onnx [--portable] [--precision ...]
    mmad export trt        --onnx model.onnx --out model.engine [--precision ...] [--plugin-library ...]
    mmad export verify     --checkpoint RUN --onnx model.onnx --data ROOT
    mmad export precisions --checkpoint RUN --data ROOT --out DIR
"""

from __future__ import annotations

import argparse

from mmad.export import evaluate_precisions, to_onnx, to_trt, verify

COMMANDS = (
    ("onnx", to_onnx.SCRIPT, "export a checkpoint to an end-to-end ONNX graph"),
    ("trt", to_trt.SCRIPT, "build a TensorRT engine (with the SelectiveScan plugin) from an exported graph"),
    ("verify", verify.SCRIPT, "compare exported graphs with PyTorch on test images (differences, AUROC)"),
    ("precisions", evaluate_precisions.SCRIPT, "export FP32/FP16/INT8 and compare their accuracy on a CPU"),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `export` with its subcommands to the `mmad` command."""
    p = subparsers.add_parser(
        "export",
        help="ONNX / TensorRT export, verification and precision reports",
        description="Turn a training checkpoint into what the runtime runs on a device.",
    )
    sub = p.add_subparsers(dest="export_command", required=True, metavar="WHAT")
    for name, script, help_text in COMMANDS:
        q = sub.add_parser(name, help=help_text, description=script.description)
        script.add_arguments(q)
        q.set_defaults(func=script.run_command)
