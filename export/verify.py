"""Check an export against PyTorch on real images: max differences of maps and scores, and the
image/pixel AUROC under each.

    python export/verify.py --checkpoint runs/bottle --onnx model.onnx --data mvtec/bottle

Runs the checkpoint in PyTorch, each given ONNX graph in onnxruntime on the CPU (a custom-op graph
with its SelectiveScan served by the C++ scan through onnxruntime-extensions) and, for a
custom-op graph, its portable twin (standard ops only). Exit code 0 when every float32 graph is
within the contract's MODEL_TOL_FP32 of PyTorch, 1 otherwise, 2 for bad input. FP16 and INT8 graphs
are reported, not judged (their accuracy is what evaluate_precisions.py compares).
`mmad export verify` takes the same options (VerifyConfig).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mmad.export.command import Script, checkpoint_option, data_option, max_images_option
from mmad.runtime.contract import MODEL_TOL_FP32, relative_max_diff
from mmad.runtime.options import option, threads_option

DEFAULT_BATCH = 4

Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # uint8 [B,S,S,3] -> (maps [B,S,S], scores [B])


@dataclass
class TestImages:
    """A test set, resized: images uint8 [N, S, S, 3], labels [N] (1 defective), masks bool [N, S, S]."""

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    paths: list[str] = field(default_factory=list)


@dataclass
class Result:
    """One way of running the model over a TestImages set."""

    name: str
    maps: np.ndarray  # [N, S, S] float32
    scores: np.ndarray  # [N] float32
    seconds_per_image: float
    metrics: dict[str, float] = field(default_factory=dict)  # percent; empty when undefined
    map_diff: float | None = None  # max|Δmap| / max|map| against the reference
    score_diff: float | None = None
    precision: str = "fp32"  # of the graph (PyTorch: fp32)

    def summary(self) -> dict:
        row = asdict(self)
        del row["maps"], row["scores"]
        return row


def load_test_images(data: Sequence[str | Path], max_images: int | None = None, image_size: int = 256) -> TestImages:
    """The test images of the dataset roots `data`, evenly spread when max_images is given (so both
    good and defective images are kept)."""
    from mmad.training.data import ImageTransform, TestDataset, find_categories

    dataset = TestDataset([c for c in find_categories([str(d) for d in data]) if c.test], ImageTransform(image_size))
    if len(dataset) == 0:
        raise ValueError(f"{', '.join(map(str, data))}: no test images (expected <category>/test/<defect>/*.png)")
    n = len(dataset) if not max_images else min(max_images, len(dataset))
    chosen = np.linspace(0, len(dataset) - 1, n).round().astype(int)
    return TestImages(
        images=np.stack([dataset.raw_image(int(i)) for i in chosen]),
        labels=np.array([dataset.labels[int(i)] for i in chosen], dtype=np.int64),
        masks=np.stack([dataset.raw_mask(int(i)) for i in chosen]),
        paths=[str(dataset.paths[int(i)]) for i in chosen],
    )


def torch_runner(checkpoint: str | Path, threads: int | None = None) -> tuple[Runner, object]:
    """PyTorch on the CPU, fed exactly what the ONNX graph is fed. Returns (runner, CheckpointInfo)."""
    import torch

    from mmad.export.onnx_export import ImageInputModel
    from mmad.training.checkpoint import load_model

    if threads:
        torch.set_num_threads(threads)
    model, info = load_model(checkpoint)
    wrapped = ImageInputModel(model).eval()

    def run(images: np.ndarray):
        with torch.no_grad():
            maps, scores = wrapped(torch.from_numpy(np.ascontiguousarray(images)))
        return maps[:, 0].numpy(), scores.numpy()

    return run, info


def onnx_runner(path: str | Path, threads: int | None = None) -> Runner:
    """onnxruntime on the CPU, custom ops registered (threads None: onnxruntime's default)."""
    from mmad.plugins.selective_scan.onnxruntime_op import inference_session
    from mmad.runtime.contract import INPUT_NAME, OUTPUT_MAP, OUTPUT_SCORE

    session = inference_session(path, threads=threads or 0)

    def run(images: np.ndarray):
        maps, scores = session.run([OUTPUT_MAP, OUTPUT_SCORE], {INPUT_NAME: np.ascontiguousarray(images)})
        return np.asarray(maps, np.float32)[:, 0], np.asarray(scores, np.float32)

    return run


def run_over(name: str, runner: Runner, data: TestImages, batch: int = DEFAULT_BATCH, progress: bool = True) -> Result:
    """Run `runner` over the images in batches; maps, scores and seconds per image."""
    from tqdm import tqdm

    maps, scores = [], []
    start = time.perf_counter()
    for i in tqdm(range(0, len(data.images), batch), desc=name, disable=not progress, leave=False):
        m, s = runner(data.images[i : i + batch])
        maps.append(m)
        scores.append(s)
    seconds = (time.perf_counter() - start) / len(data.images)
    return Result(name, np.concatenate(maps).astype(np.float32), np.concatenate(scores).astype(np.float32), seconds)


def add_metrics(result: Result, data: TestImages, full: bool = False) -> None:
    """I-AUROC and P-AUROC (all of compute_metrics' when full) in percent; left empty, with a note,
    when the images hold one class only."""
    from mmad.training.metrics import compute_metrics, exact_auroc, image_metrics, pixel_curve

    if len(set(data.labels.tolist())) < 2 or not data.masks.any():
        return
    if full:
        result.metrics = compute_metrics(result.scores, data.labels, result.maps, data.masks)
    else:
        result.metrics = {
            "I-AUROC": 100 * image_metrics(result.scores, data.labels)["I-AUROC"],
            "P-AUROC": 100 * exact_auroc(pixel_curve(result.maps, data.masks)),
        }


def compare(results: list[Result], reference: Result) -> None:
    for r in results:
        r.map_diff = relative_max_diff(r.maps, reference.maps)
        r.score_diff = relative_max_diff(r.scores, reference.scores)


def graphs_to_run(onnx_paths: Sequence[str | Path], workdir: Path) -> list[tuple[str, Path, str]]:
    """(name, path, precision) of every graph to run: each given file, plus the portable twin of
    each custom-op graph (written to workdir)."""
    from mmad.export.onnx_graph import load_onnx, read_metadata, save_onnx, scan_nodes
    from mmad.export.portable import make_portable

    graphs = []
    for path in map(Path, onnx_paths):
        model = load_onnx(path)
        precision = read_metadata(model).get("precision", "fp32")
        custom = bool(scan_nodes(model))
        graphs.append((f"{path.name} ({'custom-op' if custom else 'portable'}, {precision})", path, precision))
        if custom:
            twin = save_onnx(make_portable(model), workdir / f"{path.stem}.portable.onnx")
            graphs.append((f"{path.name} (portable twin, {precision})", twin, precision))
    return graphs


def verify(
    checkpoint: str | Path,
    onnx_paths: Sequence[str | Path],
    data: Sequence[str | Path],
    *,
    max_images: int | None = None,
    batch: int = DEFAULT_BATCH,
    threads: int | None = None,
    progress: bool = True,
) -> list[Result]:
    """PyTorch first, then every graph (see graphs_to_run), each with metrics and differences."""
    torch_run, info = torch_runner(checkpoint, threads)
    images = load_test_images(data, max_images, info.config.model.image_size)
    reference = run_over("PyTorch", torch_run, images, batch, progress)
    results = [reference]
    with tempfile.TemporaryDirectory(prefix="mmad-verify-") as tmp:
        for name, path, precision in graphs_to_run(onnx_paths, Path(tmp)):
            results.append(run_over(name, onnx_runner(path, threads), images, batch, progress))
            results[-1].precision = precision
    compare(results, reference)
    for r in results:
        add_metrics(r, images)
    return results


def passes(result: Result) -> bool:
    """A float32 graph must be within MODEL_TOL_FP32 of PyTorch; other precisions are not judged."""
    if result.precision != "fp32":
        return True
    return max(result.map_diff or 0.0, result.score_diff or 0.0) <= MODEL_TOL_FP32


def format_table(results: list[Result]) -> str:
    """A Markdown table: one row per way of running the model."""
    lines = [
        "| run | I-AUROC | P-AUROC | max Δmap / max map | max Δscore / max score | s / image |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        auroc = [f"{r.metrics[k]:.2f}" if k in r.metrics else "n/a" for k in ("I-AUROC", "P-AUROC")]
        diffs = [
            "—" if r.map_diff is None or r.name == "PyTorch" else f"{r.map_diff:.2e}",
            "—" if r.score_diff is None or r.name == "PyTorch" else f"{r.score_diff:.2e}",
        ]
        lines.append(f"| {r.name} | {auroc[0]} | {auroc[1]} | {diffs[0]} | {diffs[1]} | {r.seconds_per_image:.3f} |")
    return "\n".join(lines)


# --- command line --------------------------------------------------------------------------------------
@dataclass
class VerifyConfig:
    """What `python export/verify.py` is asked for; each field is the option of that name."""

    checkpoint: str = checkpoint_option()
    onnx: list[str] = option(metavar="ONNX", help="exported graphs; a custom-op graph brings its portable twin")
    data: list[str] = data_option()
    max_images: int | None = max_images_option()
    batch: int = option(DEFAULT_BATCH, metavar="N", help="images per PyTorch / onnxruntime call")
    threads: int | None = threads_option()
    json: str | None = option(None, metavar="FILE", help="also write the results here, as JSON")


def check(config: VerifyConfig) -> int:
    """Run verify() and print its table and verdict; exit code 1 when a float32 graph is off."""
    results = verify(
        config.checkpoint,
        config.onnx,
        config.data,
        max_images=config.max_images,
        batch=config.batch,
        threads=config.threads,
    )
    print(format_table(results))
    failed = [r.name for r in results[1:] if not passes(r)]
    verdict = (
        f"FAIL: {', '.join(failed)} differ from PyTorch by more than {MODEL_TOL_FP32:g}"
        if failed
        else f"OK: every float32 graph within {MODEL_TOL_FP32:g} (max|Δ| / max|ref|) of PyTorch"
    )
    print(verdict)
    if config.json:
        report = {"tolerance": MODEL_TOL_FP32, "ok": not failed, "results": [r.summary() for r in results]}
        Path(config.json).write_text(json.dumps(report, indent=2))
    return 1 if failed else 0


SCRIPT = Script("verify", __doc__, VerifyConfig, check)

if __name__ == "__main__":
    sys.exit(SCRIPT.main())
