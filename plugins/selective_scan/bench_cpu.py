"""Benchmark: the C++ CPU selective scan against plain PyTorch loops, float32, in the same run.

    python -m mmad.plugins.selective_scan.bench_cpu [--repeats 10] [--ref-repeats 3] [--threads N]

For every (D, L) that MMAD's scans use at 256x256 input (B=1, N=16, G=8) it prints medians of
    fwd:  the C++ path, `selective_scan_ref` (the project's reference loop) and `plain_loop_scan`
          (the same loop, vectorised over N and sliced with unbind);
    f+b:  forward+backward of the C++ path and of `plain_loop_scan` under autograd (the reference's
          own backward is left out: its per-step indexing makes it quadratic in L, minutes per shape);
the speed-ups, and the C++ output's error relative to the reference (max|cpp - ref| / max|ref|, both
float32 here; the tests check against float64).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from mmad.plugins.selective_scan import selective_scan
from mmad.plugins.selective_scan.problems import MMAD_G, MMAD_N, MMAD_STAGE_SHAPES


@dataclass
class BenchConfig:
    repeats: int = 10  # timed runs of the C++ path per shape
    ref_repeats: int = 3  # timed runs of the reference loop (slow)
    threads: int | None = None  # torch and OpenMP threads; None keeps torch's setting
    batch: int = 1
    seed: int = 0


@dataclass
class BenchRow:
    dim: int
    length: int
    cpp_fwd_ms: float
    ref_fwd_ms: float
    loop_fwd_ms: float
    cpp_fwdbwd_ms: float
    loop_fwdbwd_ms: float
    rel_err: float


def make_inputs(
    batch: int,
    dim: int,
    length: int,
    nstate: int = MMAD_N,
    groups: int = MMAD_G,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> tuple[torch.Tensor, ...]:
    """Inputs in the range a trained MambaAD/MMAD sees: A = -exp(A_log) with A_log ≈ log(1..N), and
    delta_bias chosen so that softplus(bias) spans 1e-3 .. 1e-1 (Mamba's dt initialisation)."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    a_log = torch.log(torch.arange(1, nstate + 1, dtype=torch.float64)).repeat(dim, 1) + 0.1 * randn(dim, nstate)
    dt_init = torch.exp(torch.empty(dim, dtype=torch.float64).uniform_(-6.9, -2.3, generator=gen))
    tensors = (
        randn(batch, dim, length),  # u
        0.5 * randn(batch, dim, length),  # delta
        -torch.exp(a_log),  # A
        randn(batch, groups, nstate, length),  # B
        randn(batch, groups, nstate, length),  # C
        randn(dim),  # D
        torch.log(torch.expm1(dt_init)),  # delta_bias = softplus^-1(dt_init)
    )
    return tuple(t.to(dtype) for t in tensors)


def plain_loop_scan(u, delta, A, B, C, D, delta_bias, delta_softplus: bool = True) -> torch.Tensor:
    """The reference's math as a plain PyTorch loop over L whose autograd backward stays linear in L.

    Same shapes as selective_scan; computes in the dtype of its inputs. The decays and inputs of all
    steps are formed at once ([B, D, L, N]) and the steps taken with unbind, so the backward is one
    stack instead of a full-size zero tensor per indexed step.
    """
    dim, groups = u.shape[1], B.shape[1]
    x = delta + delta_bias[:, None]
    dt = F.softplus(x) if delta_softplus else x
    decay = torch.exp(dt[..., None] * A[:, None, :])  # [B, D, L, N]
    drive = (dt * u)[..., None] * B.repeat_interleave(dim // groups, 1).transpose(-1, -2)
    h = torch.zeros_like(decay[:, :, 0])
    states = []
    for a_t, b_t in zip(decay.unbind(2), drive.unbind(2)):
        h = a_t * h + b_t
        states.append(h)
    readout = C.repeat_interleave(dim // groups, 1).transpose(-1, -2)
    return (torch.stack(states, 2) * readout).sum(-1) + D[:, None] * u


def median_ms(fn: Callable[[], object], repeats: int, warmup: bool = True) -> float:
    if warmup:
        fn()  # first use builds the C++ library and touches the buffers
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _forward_backward(inputs, scan: Callable[..., torch.Tensor]) -> Callable[[], None]:
    def run():
        leaves = [t.detach().requires_grad_() for t in inputs]
        y = scan(*leaves)
        y.backward(torch.ones_like(y))

    return run


def _cpp(*inputs):
    return selective_scan(*inputs, backend="cpu")


def _ref(*inputs):
    return selective_scan(*inputs, backend="reference")


def bench_shape(dim: int, length: int, config: BenchConfig) -> BenchRow:
    inputs = make_inputs(config.batch, dim, length, seed=config.seed)
    with torch.no_grad():
        y_cpp = _cpp(*inputs)
        y_ref = _ref(*inputs)
        rel_err = ((y_cpp - y_ref).abs().max() / y_ref.abs().max()).item()
        cpp_fwd = median_ms(lambda: _cpp(*inputs), config.repeats)
        ref_fwd = median_ms(lambda: _ref(*inputs), config.ref_repeats, warmup=False)
        loop_fwd = median_ms(lambda: plain_loop_scan(*inputs), config.ref_repeats)
    cpp_fb = median_ms(_forward_backward(inputs, _cpp), config.repeats)
    loop_fb = median_ms(_forward_backward(inputs, plain_loop_scan), config.ref_repeats)
    return BenchRow(dim, length, cpp_fwd, ref_fwd, loop_fwd, cpp_fb, loop_fb, rel_err)


def run_benchmark(config: BenchConfig, shapes=MMAD_STAGE_SHAPES) -> list[BenchRow]:
    if config.threads:
        torch.set_num_threads(config.threads)
    return [bench_shape(d, length, config) for d, length in tqdm(shapes, desc="selective_scan bench")]


def format_table(rows: list[BenchRow], config: BenchConfig) -> str:
    title = (
        f"selective scan, float32, B={config.batch}, N={MMAD_N}, G={MMAD_G}, "
        f"threads={torch.get_num_threads()}; medians in ms, ratio = baseline / C++"
    )
    head = (
        f"{'D':>5} {'L':>5} | {'fwd C++':>8} {'ref':>8} {'ratio':>6} {'loop':>8} {'ratio':>6} | "
        f"{'f+b C++':>8} {'loop':>8} {'ratio':>6} | {'rel.err':>8}"
    )
    lines = [title, head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.dim:>5} {r.length:>5} | {r.cpp_fwd_ms:>8.2f} {r.ref_fwd_ms:>8.1f} "
            f"{r.ref_fwd_ms / r.cpp_fwd_ms:>5.0f}x {r.loop_fwd_ms:>8.1f} {r.loop_fwd_ms / r.cpp_fwd_ms:>5.0f}x | "
            f"{r.cpp_fwdbwd_ms:>8.2f} "
            f"{r.loop_fwdbwd_ms:>8.1f} {r.loop_fwdbwd_ms / r.cpp_fwdbwd_ms:>5.0f}x | {r.rel_err:>8.1e}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=BenchConfig.repeats)
    parser.add_argument("--ref-repeats", type=int, default=BenchConfig.ref_repeats)
    parser.add_argument("--threads", type=int, default=None, help="torch and OpenMP threads")
    parser.add_argument("--batch", type=int, default=BenchConfig.batch)
    args = parser.parse_args(argv)
    config = BenchConfig(repeats=args.repeats, ref_repeats=args.ref_repeats, threads=args.threads, batch=args.batch)
    print(format_table(run_benchmark(config), config))


if __name__ == "__main__":
    main()
