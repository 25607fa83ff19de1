"""Speed of the portable graph against the custom-op graph in onnxruntime on this CPU.

    python export/bench_portable.py --onnx model.onnx [--batch 1] [--repeat 5] [--threads N]

For every distinct scan shape of the graph: the C++ kernel called directly, the one-node custom-op
graph (the kernel served through onnxruntime-extensions) and its portable expansion; then the whole
graph both ways. Prints medians and ratios (portable / custom op). Nothing is asserted.
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


@dataclass
class BenchPortableConfig:
    """What `python export/bench_portable.py` is asked for; each field is the option of that name."""

    onnx: str = option(metavar="ONNX", help="a custom-op graph (python export/to_onnx.py)")
    batch: int = option(1, metavar="N", help="images (or scan batch) per call")
    repeat: int = option(5, metavar="N", help="timed calls per measurement, after one warm-up call")
    threads: int | None = threads_option()
    scans_only: bool = option(False, help="skip the whole-graph timing")


def bench(config: BenchPortableConfig) -> int:
    """Print the scan table and, unless scans_only, the whole-graph one; ExportError for a graph without scans."""
    from mmad.export.onnx_graph import ExportError, load_onnx, scan_nodes

    model = load_onnx(config.onnx)
    if not scan_nodes(model):
        raise ExportError(f"{config.onnx}: no SelectiveScan nodes; give the custom-op graph")
    threads = config.threads or 0  # 0: onnxruntime's default
    with tempfile.TemporaryDirectory(prefix="mmad-bench-") as tmp:
        print("\n".join(bench_scans(model, config.batch, config.repeat, threads, Path(tmp))))
        if not config.scans_only:
            print()
            print("\n".join(bench_graphs(Path(config.onnx), model, config.batch, config.repeat, threads, Path(tmp))))
    return 0


SCRIPT = Script("bench_portable", __doc__, BenchPortableConfig, bench)

if __name__ == "__main__":
    sys.exit(SCRIPT.main())
