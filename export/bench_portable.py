"""Speed of the portable graph against the custom-op graph in onnxruntime on this CPU, and of the scan-order
permutation's forms.

    python export/bench_portable.py --onnx model.onnx [--batch 1] [--repeat 5] [--threads N] [--gathers]

For every distinct scan shape of the graph: the C++ kernel called directly, the one-node custom-op
graph (the kernel served through onnxruntime-extensions) and its portable expansion; then the whole
graph both ways. Prints medians and ratios (portable / custom op). Nothing is asserted.
--gathers: instead, for every scan shape, the permutation around the scan (encode + decode of
training/models/scan_block.py) in PyTorch and, exported, in onnxruntime and OpenVINO (when installed):
the single-element form along L it replaced against the forms the model uses now.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from mmad.export.command import Script
from mmad.runtime.options import option, threads_option


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up: first-run allocations and kernel selection
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median seconds of each function, timed in turns (one call of each per round) so that a change in the
    machine's load during the run hits all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(repeat + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_:  # round 0 is the warm-up
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def scan_inputs(batch: int, d: int, n: int, g: int, length: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    f32 = np.float32
    return {
        "u": rng.standard_normal((batch, d, length)).astype(f32),
        "delta": (0.5 * rng.standard_normal((batch, d, length)) - 1).astype(f32),
        "A": -np.exp(rng.standard_normal((d, n))).astype(f32),
        "B": rng.standard_normal((batch, g, n, length)).astype(f32),
        "C": rng.standard_normal((batch, g, n, length)).astype(f32),
        "D": rng.standard_normal(d).astype(f32),
        "delta_bias": (0.5 * rng.standard_normal(d)).astype(f32),
    }


def bench_scans(model, batch: int, repeat: int, threads: int, tmp: Path) -> list[str]:
    import onnx

    from mmad.export.portable import infer_scan_dims, make_portable, single_scan_model
    from mmad.plugins.selective_scan.onnxruntime_op import inference_session, scan_cpu_module

    cpu = scan_cpu_module()
    shapes = sorted({(s.d, s.n, s.g, s.length) for s in infer_scan_dims(model).values()}, key=lambda s: s[3])
    counts = {shape: 0 for shape in shapes}
    for s in infer_scan_dims(model).values():
        counts[(s.d, s.n, s.g, s.length)] += 1
    lines = [
        "| scan D, N, G, L (calls) | C++ kernel | custom op (ort-extensions) | portable | portable / custom op |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for d, n, g, length in shapes:
        x = scan_inputs(batch, d, n, g, length)
        one = single_scan_model(d, n, g, length)
        onnx.save(one, tmp / "scan.onnx")
        onnx.save(make_portable(one), tmp / "scan_portable.onnx")
        custom = inference_session(tmp / "scan.onnx", threads=threads)
        portable = inference_session(tmp / "scan_portable.onnx", custom_ops=False, threads=threads)
        t_kernel = median_seconds(partial(cpu.scan_forward, **x), repeat)
        t_custom = median_seconds(partial(custom.run, None, x), repeat)
        t_portable = median_seconds(partial(portable.run, None, x), repeat)
        lines.append(
            f"| {d}, {n}, {g}, {length} ({counts[(d, n, g, length)]}) | {1e3 * t_kernel:.1f} ms | "
            f"{1e3 * t_custom:.1f} ms | {1e3 * t_portable:.1f} ms | {t_portable / t_custom:.2f} |"
        )
    return lines


def bench_graphs(path: Path, model, batch: int, repeat: int, threads: int, tmp: Path) -> list[str]:
    import onnx

    from mmad.export.onnx_graph import read_metadata
    from mmad.export.portable import make_portable
    from mmad.plugins.selective_scan.onnxruntime_op import inference_session
    from mmad.runtime.contract import INPUT_NAME

    size = int(read_metadata(model).get("image_size", 256))
    images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    onnx.save(make_portable(model), tmp / "portable.onnx")
    custom = inference_session(path, threads=threads)
    portable = inference_session(tmp / "portable.onnx", custom_ops=False, threads=threads)
    t_custom = median_seconds(lambda: custom.run(None, {INPUT_NAME: images}), repeat)
    t_portable = median_seconds(lambda: portable.run(None, {INPUT_NAME: images}), repeat)
    return [
        f"| whole graph, batch {batch} | custom op | portable | portable / custom op |",
        "| --- | ---: | ---: | ---: |",
        f"| {path.name} | {t_custom:.3f} s | {t_portable:.3f} s | {t_portable / t_custom:.2f} |",
    ]


def permutation_module(scan, form: str):
    """encode + decode of one SS2D's scan orders (a DirectionalScan) as a module torch can export, in one of
    three forms: "elements" (index_select along L, the form before issue 14), "gather" (PyTorch's now),
    "rows" (the export's now)."""
    import torch

    def elements(x, y):
        b, c, length = x.shape
        k = scan.num_directions
        seq = x.index_select(2, scan.encode_table.reshape(-1)).view(b, c, k, length).transpose(1, 2)
        offsets = scan.decode_table.reshape(k, length) + length * torch.arange(k).view(-1, 1)
        flat = y.transpose(1, 2).reshape(b, c, k * length)
        return seq, flat.index_select(2, offsets.reshape(-1)).view(b, c, k, length).sum(2).transpose(1, 2)

    forward = {
        "elements": elements,
        "gather": lambda x, y: (scan.gather_encode(x), scan.gather_decode(y).transpose(1, 2)),
        "rows": lambda x, y: (scan.rows_encode(x), scan.rows_decode(y)),
    }[form]

    class Permutation(torch.nn.Module):
        def forward(self, x, y):  # x [B, c, L], y [B, K, c, L]
            return forward(x, y)

    return Permutation()


def _runtimes(path: Path, threads: int) -> dict[str, Callable[[dict[str, np.ndarray]], object]]:
    """onnxruntime and, when installed, OpenVINO sessions of an exported permutation: name -> run(feed)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    runs = {"onnxruntime": partial(session.run, None)}
    try:
        import openvino
    except ImportError:
        return runs
    config = {"INFERENCE_PRECISION_HINT": "f32", **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
    request = openvino.Core().compile_model(str(path), "CPU", config).create_infer_request()
    runs["OpenVINO"] = request.infer
    return runs


def bench_gather_forms(model, batch: int, repeat: int, threads: int, tmp: Path) -> list[str]:
    """ms of encode + decode per scan shape: PyTorch (elements vs gather), onnxruntime and OpenVINO
    (elements vs rows, exported as the model exports them)."""
    import torch

    from mmad.export.portable import infer_scan_dims
    from mmad.training.models.scan_block import DirectionalScan

    if threads:
        torch.set_num_threads(threads)
    lines = [
        "| c, L (K) | runtime | elements along L (before) | now | before / now |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for d, g, length in sorted({(s.d, s.g, s.length) for s in infer_scan_dims(model).values()}, key=lambda s: s[2]):
        c, size = d // g, int(round(length**0.5))
        scan = DirectionalScan("hilbert", size, g)
        x, y = torch.randn(batch, c, length), torch.randn(batch, g, c, length)
        feed = {"x": x.numpy(), "y": y.numpy()}
        forms = {form: permutation_module(scan, form) for form in ("elements", "gather", "rows")}
        with torch.no_grad():
            t = interleaved_medians({form: partial(forms[form], x, y) for form in ("elements", "gather")}, repeat)
        rows = {"PyTorch": (t["elements"], t["gather"])}
        runs: dict[str, dict[str, Callable[[], object]]] = {}
        for form in ("elements", "rows"):
            path = tmp / f"permutation_{form}.onnx"
            torch.onnx.export(forms[form], (x, y), str(path), input_names=["x", "y"], dynamo=False, opset_version=17)
            for runtime, run in _runtimes(path, threads).items():
                runs.setdefault(runtime, {})[form] = partial(run, feed)
        for runtime, fns in runs.items():
            t = interleaved_medians(fns, repeat)
            rows[runtime] = (t["elements"], t["rows"])
        for runtime, (before, now) in rows.items():
            lines.append(
                f"| {c}, {length} ({g}) | {runtime} | {1e3 * before:.2f} ms | {1e3 * now:.2f} ms | {before / now:.1f} |"
            )
    return lines


@dataclass
class BenchPortableConfig:
    """What `python export/bench_portable.py` is asked for; each field is the option of that name."""

    onnx: str = option(metavar="ONNX", help="a custom-op graph (python export/to_onnx.py)")
    batch: int = option(1, metavar="N", help="images (or scan batch) per call")
    repeat: int = option(5, metavar="N", help="timed calls per measurement, after one warm-up call")
    threads: int | None = threads_option()
    scans_only: bool = option(False, help="skip the whole-graph timing")
    gathers: bool = option(
        False, help="time the scan-order permutation's forms instead (PyTorch, onnxruntime, OpenVINO)"
    )


def bench(config: BenchPortableConfig) -> int:
    """Print the scan table and, unless scans_only, the whole-graph one; ExportError for a graph without scans."""
    from mmad.export.onnx_graph import ExportError, load_onnx, scan_nodes

    model = load_onnx(config.onnx)
    if not scan_nodes(model):
        raise ExportError(f"{config.onnx}: no SelectiveScan nodes; give the custom-op graph")
    threads = config.threads or 0  # 0: onnxruntime's default
    with tempfile.TemporaryDirectory(prefix="mmad-bench-") as tmp:
        if config.gathers:
            print("\n".join(bench_gather_forms(model, config.batch, config.repeat, threads, Path(tmp))))
            return 0
        print("\n".join(bench_scans(model, config.batch, config.repeat, threads, Path(tmp))))
        if not config.scans_only:
            print()
            print("\n".join(bench_graphs(Path(config.onnx), model, config.batch, config.repeat, threads, Path(tmp))))
    return 0


SCRIPT = Script("bench_portable", __doc__, BenchPortableConfig, bench)

if __name__ == "__main__":
    sys.exit(SCRIPT.main())
