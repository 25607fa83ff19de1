"""Accuracy of the exported precisions on a CPU: PyTorch, ONNX FP32, FP16 and INT8 side by side.

    python export/evaluate_precisions.py --checkpoint runs/bottle --data mvtec/bottle --out exports/bottle

Exports the checkpoint (FP32 custom-op graph, its portable twin, FP16, INT8 calibrated on normal
training images of --calib-data, default those of --data), runs each in onnxruntime on the CPU over
the test images of --data, and writes precisions.json and precisions.md (metrics from
mmad.training.metrics.compute_metrics, max differences against PyTorch, seconds per image). Exit
code 1 when INT8 loses more than MAX_INT8_LOSS points of I-AUROC against FP32 or a float32 graph
leaves the contract's MODEL_TOL_FP32, 2 for bad input. `mmad export precisions` takes the same
options (PrecisionsConfig).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mmad.export.command import (
    DEFAULT_CALIBRATION_IMAGES,
    Script,
    calib_images_option,
    calib_method_option,
    checkpoint_option,
    data_option,
    max_images_option,
)
from mmad.runtime.contract import MODEL_TOL_FP32
from mmad.runtime.options import calib_data_option, option, threads_option

MAX_INT8_LOSS = 1.0  # I-AUROC points INT8 may lose against the FP32 graph
SHOWN_METRICS = ("I-AUROC", "P-AUROC", "AUPRO", "mAD")


def export_precisions(
    checkpoint: str | Path,
    out: Path,
    calib_data: Sequence[str | Path],
    calib_images: int = DEFAULT_CALIBRATION_IMAGES,
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
    threads: int | None = None,
    batch: int = 4,
):
    """Results (PyTorch first) with metrics and differences against PyTorch."""
    from mmad.export.verify import add_metrics, compare, load_test_images, onnx_runner, run_over, torch_runner

    torch_run, info = torch_runner(checkpoint, threads)
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


@dataclass
class PrecisionsConfig:
    """What `python export/evaluate_precisions.py` is asked for; each field is the option of that name."""

    checkpoint: str = checkpoint_option()
    data: list[str] = data_option()
    out: str = option(metavar="DIR", help="folder for the four graphs and the report")
    calib_data: list[str] = calib_data_option()  # empty: the training images of --data
    calib_images: int = calib_images_option()
    calib_method: str = calib_method_option()
    max_images: int | None = max_images_option()
    threads: int | None = threads_option()


def report(config: PrecisionsConfig) -> int:
    """Export, evaluate and write precisions.md / precisions.json; exit code 1 when judge() finds problems."""
    out = Path(config.out)
    paths = export_precisions(
        config.checkpoint, out, config.calib_data or config.data, config.calib_images, config.calib_method
    )
    results, images = evaluate(
        config.checkpoint, paths, config.data, max_images=config.max_images, threads=config.threads
    )
    table = markdown_table(results)
    problems = judge(results)
    n_bad = int(images.labels.sum())
    header = (
        f"# Exported precisions on the CPU (onnxruntime)\n\ncheckpoint `{config.checkpoint}`, data "
        f"{', '.join(f'`{d}`' for d in config.data)}: {len(images.labels)} test images ({n_bad} defective); "
        f"INT8 calibrated on {config.calib_images} normal training images ({config.calib_method}).\n\n"
    )
    verdict = "\n".join(f"- {p}" for p in problems) or "All checks passed."
    (out / "precisions.md").write_text(f"{header}{table}\n\n{verdict}\n")
    (out / "precisions.json").write_text(
        json.dumps(
            {
                "checkpoint": str(config.checkpoint),
                "data": [str(d) for d in config.data],
                "images": len(images.labels),
                "calibration": {"images": config.calib_images, "method": config.calib_method},
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


SCRIPT = Script("evaluate_precisions", __doc__, PrecisionsConfig, report)

if __name__ == "__main__":
    sys.exit(SCRIPT.main())
