"""Accuracy of the exported precisions on a CPU: PyTorch, ONNX FP32, FP16 and INT8 side by side.

    python export/evaluate_precisions.py --checkpoint runs/bottle --data ../shared/data/bottle --out exports/bottle

Exports the checkpoint (FP32 custom-op graph, its portable twin, FP16, INT8 calibrated on normal
training images of --calib-data), runs each in onnxruntime on the CPU over the test images of
--data, and writes precisions.json and precisions.md (metrics from mmad.training.metrics.compute_metrics,
max differences against PyTorch, seconds per image). Exit code 1 when INT8 loses more than
MAX_INT8_LOSS points of I-AUROC against FP32 or a float32 graph leaves the tolerance, 2 for bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

MAX_INT8_LOSS = 1.0  # I-AUROC points INT8 may lose against the FP32 graph
SHOWN_METRICS = ("I-AUROC", "P-AUROC", "AUPRO", "mAD")


def export_precisions(
    checkpoint: str | Path,
    out: Path,
    calib_data: Sequence[str | Path],
    calib_images: int,
    calib_method: str = "minmax",
    log=print,
) -> dict[str, Path]:
    """Write model_fp32.onnx, model_portable.onnx, model_fp16.onnx and model_int8.onnx into `out`."""
    import onnx

    from mmad.export.onnx_export import export_onnx
    from mmad.export.onnx_graph import save_onnx
    from mmad.export.portable import make_portable
    from mmad.export.precision import calibration_images, to_fp16, to_int8

    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "fp32": out / "model_fp32.onnx",
        "portable": out / "model_portable.onnx",
        "fp16": out / "model_fp16.onnx",
        "int8": out / "model_int8.onnx",
    }
    log(f"exporting {checkpoint} -> {paths['fp32']}")
    export_onnx(checkpoint, paths["fp32"])
    fp32 = onnx.load(str(paths["fp32"]))
    save_onnx(make_portable(fp32), paths["portable"])
    save_onnx(to_fp16(fp32), paths["fp16"])
    from mmad.training.checkpoint import read_info

    image_size = read_info(checkpoint).config.model.image_size
    images = calibration_images(calib_data, calib_images, image_size)
    log(f"calibrating INT8 on {len(images)} normal training images ({calib_method})")
    save_onnx(to_int8(fp32, images, method=calib_method), paths["int8"])
    return paths


def evaluate(
    checkpoint: str | Path,
    paths: dict[str, Path],
    data: Sequence[str | Path],
    *,
    max_images: int | None = None,
    threads: int = 0,
    batch: int = 4,
):
    """Results (PyTorch first) with metrics and differences against PyTorch."""
    from mmad.export.verify import add_metrics, compare, load_test_images, onnx_runner, run_over, torch_runner

    torch_run, info = torch_runner(checkpoint)
    images = load_test_images(data, max_images, info.config.model.image_size)
    names = {
        "fp32": "ONNX FP32 (custom op)",
        "portable": "ONNX FP32 (portable)",
        "fp16": "ONNX FP16 (custom op)",
        "int8": "ONNX INT8 Q/DQ (custom op)",
    }
    results = [run_over("PyTorch", torch_run, images, batch)]
    for key, path in paths.items():
        results.append(run_over(names[key], onnx_runner(path, threads), images, batch))
    compare(results, results[0])
    for r in results:
        add_metrics(r, images, full=True)
    return results, images


def markdown_table(results) -> str:
    head = "| run | " + " | ".join(SHOWN_METRICS) + " | max Δmap / max map | max Δscore / max score | s / image |"
    lines = [head, "| --- |" + " ---: |" * (len(SHOWN_METRICS) + 3)]
    for r in results:
        cells = [f"{r.metrics[k]:.2f}" if k in r.metrics else "n/a" for k in SHOWN_METRICS]
        ref = r.name == "PyTorch"
        diffs = ["—", "—"] if ref else [f"{r.map_diff:.2e}", f"{r.score_diff:.2e}"]
        cells += [*diffs, f"{r.seconds_per_image:.3f}"]
        lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def judge(results) -> list[str]:
    """Problems: a float32 graph outside the tolerance, INT8 losing more than MAX_INT8_LOSS I-AUROC points."""
    from mmad.export.verify import MODEL_TOL_FP32

    by_name = {r.name: r for r in results}
    problems = [
        f"{r.name}: differs from PyTorch by {max(r.map_diff, r.score_diff):.2e} > {MODEL_TOL_FP32:g}"
        for r in results
        if "FP32" in r.name and max(r.map_diff, r.score_diff) > MODEL_TOL_FP32
    ]
    fp32, int8 = by_name.get("ONNX FP32 (custom op)"), by_name.get("ONNX INT8 Q/DQ (custom op)")
    if fp32 and int8 and "I-AUROC" in fp32.metrics and "I-AUROC" in int8.metrics:
        loss = fp32.metrics["I-AUROC"] - int8.metrics["I-AUROC"]
        if loss > MAX_INT8_LOSS:
            problems.append(f"INT8 loses {loss:.2f} I-AUROC points (> {MAX_INT8_LOSS})")
    return problems


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint folder (mmad train)")
    p.add_argument("--data", nargs="+", required=True, help="dataset root(s) with test images and masks")
    p.add_argument("--out", required=True, help="folder for the four graphs and the report")
    p.add_argument(
        "--calib-data", nargs="+", help="roots whose normal training images calibrate INT8 (default: --data)"
    )
    p.add_argument("--calib-images", type=int, default=32, help="calibration images (default 32)")
    p.add_argument("--calib-method", default="minmax", choices=["minmax", "percentile", "entropy"])
    p.add_argument("--max-images", type=int, help="test images to use, evenly spread (default: all)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")


def run_command(args: argparse.Namespace) -> int:
    out = Path(args.out)
    paths = export_precisions(args.checkpoint, out, args.calib_data or args.data, args.calib_images, args.calib_method)
    results, images = evaluate(args.checkpoint, paths, args.data, max_images=args.max_images, threads=args.threads)
    table = markdown_table(results)
    problems = judge(results)
    n_bad = int(images.labels.sum())
    header = (
        f"# Exported precisions on the CPU (onnxruntime)\n\ncheckpoint `{args.checkpoint}`, data "
        f"{', '.join(f'`{d}`' for d in args.data)}: {len(images.labels)} test images ({n_bad} defective); "
        f"INT8 calibrated on {args.calib_images} normal training images ({args.calib_method}).\n\n"
    )
    verdict = "\n".join(f"- {p}" for p in problems) or "All checks passed."
    (out / "precisions.md").write_text(f"{header}{table}\n\n{verdict}\n")
    (out / "precisions.json").write_text(
        json.dumps(
            {
                "checkpoint": str(args.checkpoint),
                "data": [str(d) for d in args.data],
                "images": len(images.labels),
                "calibration": {"images": args.calib_images, "method": args.calib_method},
                "results": [r.summary() for r in results],
                "problems": problems,
            },
            indent=2,
        )
    )
    print(table)
    print("\n".join(problems) or "All checks passed.")
    print(f"report: {out / 'precisions.md'}")
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python export/evaluate_precisions.py", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_command(args)
    except (ValueError, ImportError) as err:  # ExportError, CheckpointError, DataError, a missing package
        print(f"evaluate_precisions: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
