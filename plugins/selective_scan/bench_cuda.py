"""Benchmark of the selective-scan CUDA kernel on MMAD's stage shapes (needs a CUDA GPU).

For each stage shape and I/O type: the kernel's time (median over repetitions, replayed from a CUDA graph so
that launch overhead is left out), its compulsory bytes/s and exp/s against the ceilings measured on the same
GPU (a device-to-device copy; an exp2f throughput kernel through CuPy when it imports), its elements/s, and
side by side the PyTorch reference (selective_scan_ref, float32 on the GPU) and mamba-ssm's kernel when
installed, with the ratios. Every kernel output is also checked against the float64 reference.

    python -m mmad.plugins.selective_scan.bench_cuda --lib plugins/build/selective_scan/libmmad_selective_scan.so
    python -m mmad.plugins.selective_scan.bench_cuda --build-dir plugins/build/bench      # builds for this GPU first
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from mmad.plugins.selective_scan import build as scan_build
from mmad.plugins.selective_scan import cuda as scan_cuda
from mmad.plugins.selective_scan import problems
from mmad.runtime.contract import SCAN_INPUTS

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


@dataclass
class BenchConfig:
    lib: Path | None = None  # a built libmmad_selective_scan.so; else built into build_dir
    build_dir: Path = scan_build.PLUGINS_DIR / "build" / "bench"
    dtypes: tuple[str, ...] = ("fp32", "fp16")
    batches: tuple[int, ...] = (1,)
    reps: int = 30  # timed repetitions (median reported)
    inner: int = 10  # kernel launches per repetition
    ref_reps: int = 3  # repetitions of the (slow) PyTorch reference
    check: bool = True  # compare each kernel output with the float64 reference


@dataclass
class Ceilings:
    copy_bytes_per_s: float  # device-to-device copy, bytes read + written per second
    exp2_per_s: float | None  # exp2f per second over the whole GPU (None without CuPy)


@dataclass
class Row:
    shape: str
    dtype: str
    nchunks: int
    kernel_us: float
    timing: str  # "graph" or "stream"
    bytes_per_s: float
    exp_per_s: float
    elements_per_s: float
    bound_us: float  # max(bytes / copy rate, exps / exp rate)
    reference_us: float | None
    mamba_us: float | None
    rel_error: float | None

    @property
    def speedup_vs_reference(self) -> float | None:
        return self.reference_us / self.kernel_us if self.reference_us else None

    @property
    def speedup_vs_mamba(self) -> float | None:
        return self.mamba_us / self.kernel_us if self.mamba_us else None


# ---- timing -------------------------------------------------------------------------------------------------


def time_cuda(fn: Callable[[], object], reps: int, inner: int, use_graph: bool = True) -> tuple[float, str]:
    """Median seconds of one call of fn (which only enqueues GPU work on the current stream)."""
    fn()
    torch.cuda.synchronize()
    run: Callable[[], object]
    method = "stream"
    if use_graph:
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                fn()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for _ in range(inner):
                    fn()
            run, method = graph.replay, "graph"
        except Exception as exc:  # noqa: BLE001 - some callables cannot be captured: time them on the stream
            print(f"  (graph capture failed, timing on the stream: {exc})")
            torch.cuda.synchronize()
    if method == "stream":

        def run():
            for _ in range(inner):
                fn()

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    run()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / inner)
    return statistics.median(times), method


def measure_copy_rate(nbytes: int = 1 << 30, reps: int = 10) -> float:
    """Bytes read + written per second by a device-to-device copy of nbytes."""
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    seconds, _ = time_cuda(lambda: dst.copy_(src), reps, 1, use_graph=False)
    return 2 * nbytes / seconds


EXP2_KERNEL = r"""
extern "C" __global__ void exp2_throughput(float* out, int iters, float a) {
    float x[8];
    #pragma unroll
    for (int k = 0; k < 8; ++k) x[k] = (threadIdx.x + k) * 1e-3f;
    for (int i = 0; i < iters; ++i) {
        #pragma unroll
        for (int k = 0; k < 8; ++k) x[k] = exp2f(x[k] * a);
    }
    float s = 0.f;
    #pragma unroll
    for (int k = 0; k < 8; ++k) s += x[k];
    out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}
"""


def measure_exp2_rate(num_sms: int) -> float | None:
    """exp2f per second over the GPU (the kernel's exp, same compiler defaults), via CuPy; None without it."""
    try:
        import cupy as cp
    except Exception as exc:  # noqa: BLE001 - any import failure just drops this ceiling
        print(f"  CuPy not available ({exc}): no exp-throughput ceiling")
        return None
    try:
        kernel = cp.RawKernel(EXP2_KERNEL, "exp2_throughput")
        blocks, threads, iters = num_sms * 8, 256, 4096
        out = cp.empty(blocks * threads, dtype=cp.float32)
        args = (out, cp.int32(iters), cp.float32(-0.7))
        kernel((blocks,), (threads,), args)
        cp.cuda.Device().synchronize()
        start, end = cp.cuda.Event(), cp.cuda.Event()
        times = []
        for _ in range(5):
            start.record()
            kernel((blocks,), (threads,), args)
            end.record()
            end.synchronize()
            times.append(cp.cuda.get_elapsed_time(start, end) / 1e3)
        return blocks * threads * iters * 8 / statistics.median(times)
    except Exception as exc:  # noqa: BLE001 - NVRTC or launch failure just drops this ceiling
        print(f"  exp2 throughput kernel failed ({exc}): no exp-throughput ceiling")
        return None


def mamba_scan() -> Callable | None:
    """mamba-ssm's selective_scan_fn when installed with its CUDA extension, else None."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # noqa: BLE001 - ImportError, or an OSError from an extension built for another torch
        return None
    return selective_scan_fn


# ---- one problem -----------------------------------------------------------------------------------------------


def compulsory_bytes(p, elem: int) -> int:
    """Bytes every implementation must move: u, delta, y [B, D, L], B, C [B, G, N, L] (io type), A, D, bias."""
    io = 3 * p.batch * p.dim * p.seqlen + 2 * p.batch * p.ngroups * p.dstate * p.seqlen
    return io * elem + (p.dim * p.dstate + 2 * p.dim) * 4


def kernel_exps(p, nchunks: int) -> int:
    """exp2f calls of the kernel: one per (b, d, n, t) in the final pass, and again in pass 1 for all chunks
    but the last."""
    steps = p.seqlen + (p.seqlen * (nchunks - 1)) // nchunks
    return p.batch * p.dim * p.dstate * steps


def bench_problem(lib, p, dtype_name: str, ceilings: Ceilings, cfg: BenchConfig, mamba) -> Row:
    dtype = DTYPES[dtype_name]
    inputs = problems.make_inputs(p, dtype, seed=1, device="cuda")
    args = [inputs[k] for k in SCAN_INPUTS]
    num_sms = torch.cuda.get_device_properties(0).multi_processor_count
    scan = scan_cuda.prepare_scan(lib, *args, delta_softplus=True, num_sms=num_sms)
    nchunks = scan.layout()["nchunks"]
    seconds, method = time_cuda(scan.launch, cfg.reps, cfg.inner)

    rel_error = None
    if cfg.check:
        scan.launch()
        torch.cuda.synchronize()
        rel_error = problems.relative_error(scan.y, problems.reference_float64(inputs))

    from mmad.plugins.selective_scan import selective_scan_ref

    ref_s, _ = time_cuda(lambda: selective_scan_ref(*args, delta_softplus=True), cfg.ref_reps, 1, use_graph=False)
    mamba_s = None
    if mamba is not None:
        try:
            mamba_s, _ = time_cuda(
                lambda: mamba(*args[:6], z=None, delta_bias=args[6], delta_softplus=True), cfg.reps, cfg.inner
            )
        except Exception as exc:  # noqa: BLE001 - report and go on with the other columns
            print(f"  mamba-ssm failed on {p.label} {dtype_name}: {exc}")

    nbytes = compulsory_bytes(p, torch.tensor([], dtype=dtype).element_size())
    exps = kernel_exps(p, nchunks)
    bound = nbytes / ceilings.copy_bytes_per_s
    if ceilings.exp2_per_s:
        bound = max(bound, exps / ceilings.exp2_per_s)
    return Row(
        shape=f"B{p.batch} D{p.dim} L{p.seqlen}",
        dtype=dtype_name,
        nchunks=nchunks,
        kernel_us=seconds * 1e6,
        timing=method,
        bytes_per_s=nbytes / seconds,
        exp_per_s=exps / seconds,
        elements_per_s=p.batch * p.dim * p.seqlen / seconds,
        bound_us=bound * 1e6,
        reference_us=ref_s * 1e6,
        mamba_us=mamba_s * 1e6 if mamba_s else None,
        rel_error=rel_error,
    )


# ---- report ----------------------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def markdown_table(rows: list[Row], ceilings: Ceilings) -> str:
    exp_rate = ceilings.exp2_per_s
    lines = [
        (
            "| shape (N=16, G=8) | I/O | chunks | kernel µs | GB/s (% copy) | Gexp/s (% exp2 peak) | Melem/s "
            "| of bound | PyTorch ref µs | ref / kernel | mamba-ssm µs | mamba / kernel | max rel err |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        bw = f"{r.bytes_per_s / 1e9:.0f} ({100 * r.bytes_per_s / ceilings.copy_bytes_per_s:.0f}%)"
        ex = (
            f"{r.exp_per_s / 1e9:.0f} ({100 * r.exp_per_s / exp_rate:.0f}%)" if exp_rate else f"{r.exp_per_s / 1e9:.0f}"
        )
        lines.append(
            f"| {r.shape} | {r.dtype} | {r.nchunks} | {r.kernel_us:.1f} | {bw} | {ex} | {r.elements_per_s / 1e6:.0f} "
            f"| {r.bound_us / r.kernel_us:.2f} | {_fmt(r.reference_us, '.0f')} "
            f"| {_fmt(r.speedup_vs_reference, '.0f')}x | {_fmt(r.mamba_us, '.1f')} "
            f"| {_fmt(r.speedup_vs_mamba, '.2f')} | {_fmt(r.rel_error, '.1e')} |"
        )
    return "\n".join(lines)


def run(cfg: BenchConfig) -> dict:
    if not torch.cuda.is_available():
        raise SystemExit("bench_cuda needs a CUDA GPU (torch.cuda.is_available() is False)")
    props = torch.cuda.get_device_properties(0)
    arch = f"{props.major}{props.minor}"
    lib_path = cfg.lib
    if lib_path is None:
        built, seconds = scan_build.build(
            scan_build.BuildConfig(
                cfg.build_dir, cuda_archs=arch, trt_plugin="OFF", targets=(scan_build.CUDA_LIBRARY,), cuda="ON"
            )
        )
        print(f"built libmmad_selective_scan.so for sm_{arch} in {seconds:.1f} s")
        lib_path = scan_build.library_file(built, scan_build.CUDA_LIBRARY)
    lib = scan_cuda.ScanLibrary(lib_path)
    device = f"{props.name} (sm_{arch}, {props.multi_processor_count} SMs)"
    print(f"device: {device}; torch {torch.__version__}, CUDA {torch.version.cuda}")
    ceilings = Ceilings(measure_copy_rate(), measure_exp2_rate(props.multi_processor_count))
    print(
        f"ceilings: copy {ceilings.copy_bytes_per_s / 1e9:.0f} GB/s (read + write); exp2f "
        f"{_fmt(ceilings.exp2_per_s and ceilings.exp2_per_s / 1e9, '.0f')} G/s"
    )
    mamba = mamba_scan()
    print(f"mamba-ssm: {'installed' if mamba else 'not installed'}")

    rows = []
    for batch in cfg.batches:
        for dim, seqlen in problems.MMAD_STAGE_SHAPES:
            for dtype_name in cfg.dtypes:
                row = bench_problem(lib, problems.Problem(batch, dim, seqlen), dtype_name, ceilings, cfg, mamba)
                print(
                    f"  {row.shape} {row.dtype}: kernel {row.kernel_us:.1f} us ({row.timing}, {row.nchunks} chunks), "
                    f"reference {_fmt(row.reference_us, '.0f')} us, mamba {_fmt(row.mamba_us, '.1f')} us, "
                    f"err {_fmt(row.rel_error, '.1e')}"
                )
                rows.append(row)
    table = markdown_table(rows, ceilings)
    print(
        f"\nSelective scan on {device}: medians of {cfg.reps} x {cfg.inner} launches "
        f"(reference: {cfg.ref_reps} calls)\n"
    )
    print(table)
    return {
        "device": device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "ceilings": asdict(ceilings),
        "config": {k: str(v) for k, v in asdict(cfg).items()},
        "rows": [
            asdict(r) | {"speedup_vs_reference": r.speedup_vs_reference, "speedup_vs_mamba": r.speedup_vs_mamba}
            for r in rows
        ],
        "markdown": table,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lib", type=Path, help="a built libmmad_selective_scan.so")
    parser.add_argument("--build-dir", type=Path, default=BenchConfig.build_dir)
    parser.add_argument("--dtypes", nargs="+", default=list(BenchConfig.dtypes), choices=sorted(DTYPES))
    parser.add_argument("--batches", nargs="+", type=int, default=list(BenchConfig.batches))
    parser.add_argument("--reps", type=int, default=BenchConfig.reps)
    parser.add_argument("--inner", type=int, default=BenchConfig.inner)
    parser.add_argument("--ref-reps", type=int, default=BenchConfig.ref_reps)
    parser.add_argument("--no-check", action="store_true", help="skip the float64 reference comparison")
    parser.add_argument("--out-json", type=Path, help="write the results as JSON")
    parser.add_argument("--out-md", type=Path, help="write the table as Markdown")
    args = parser.parse_args()
    cfg = BenchConfig(
        args.lib,
        args.build_dir,
        tuple(args.dtypes),
        tuple(args.batches),
        args.reps,
        args.inner,
        args.ref_reps,
        not args.no_check,
    )
    result = run(cfg)
    if args.out_json:
        args.out_json.write_text(json.dumps(result, indent=2))
    if args.out_md:
        args.out_md.write_text(f"Selective scan on {result['device']}\n\n{result['markdown']}\n")


if __name__ == "__main__":
    main()
