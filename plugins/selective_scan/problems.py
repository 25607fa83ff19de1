"""Test and benchmark problems for the selective-scan kernel, and the host harness's file protocol.

Shapes as in native/cuda/selective_scan.h: u, delta [B, D, L]; A [D, N]; B, C [B, G, N, L]; D, delta_bias [D].
Needs torch.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mmad.runtime.contract import SCAN_INPUTS

# The one list of MMAD's scan stages: (D, L) of every selective scan MMAD runs at 256x256 input, with B = 1,
# N = 16 states and G = 8 scan directions (README.md beside this file, "Stage shapes in MMAD"). The tests
# and both benchmarks use it.
MMAD_STAGE_SHAPES = ((4096, 256), (2048, 64), (1024, 256), (512, 1024), (256, 4096))
MMAD_N = 16
MMAD_G = 8
# Small test problems every implementation is checked on against the reference:
# (batch, D, L, N, G): odd lengths, B > 1, the generic-N kernel, one group, one channel per group.
SMALL_SHAPES = (
    (2, 64, 1, 16, 8),
    (3, 64, 7, 16, 8),
    (2, 16, 1000, 16, 8),
    (2, 24, 33, 5, 3),
    (2, 8, 20, 16, 1),
    (1, 16, 50, 16, 16),
)


@dataclass(frozen=True)
class Problem:
    batch: int
    dim: int
    seqlen: int
    dstate: int = MMAD_N
    ngroups: int = MMAD_G

    @property
    def label(self) -> str:
        return f"B{self.batch}-D{self.dim}-L{self.seqlen}-N{self.dstate}-G{self.ngroups}"


def make_inputs(
    problem: Problem,
    dtype: torch.dtype,
    seed: int = 0,
    slow_decay: bool = False,
    positive_delta: bool = False,
    device: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """Random inputs shaped like a trained Mamba block's: A = -exp(.) < 0, Delta around 0.05..1.

    slow_decay draws A and Delta small, so states remember hundreds of steps and chunk boundaries matter:
    the case that exercises the carry across chunks. positive_delta makes delta + delta_bias > 0 for use
    without softplus (a negative Delta makes the scan grow without bound). u, delta, B, C have `dtype`;
    A, D, delta_bias float32.
    """
    g = torch.Generator().manual_seed(seed)
    b, d, length, n, groups = problem.batch, problem.dim, problem.seqlen, problem.dstate, problem.ngroups

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    if slow_decay:
        a = -torch.exp(torch.empty(d, n).uniform_(-7.0, -2.0, generator=g))
        delta = randn(b, d, length) * 0.5 - 3.0
    else:
        # S4D-real initialisation (A = -(1..N)) with a spread, as after training.
        a = -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1) * torch.exp(randn(d, n) * 0.3)
        delta = randn(b, d, length) * 0.5 - 1.0
    inputs = {
        "u": randn(b, d, length),
        "delta": delta,
        "A": a,
        "B": randn(b, groups, n, length),
        "C": randn(b, groups, n, length),
        "D": randn(d),
        "delta_bias": randn(d) * 0.1,
    }
    if positive_delta:
        inputs["delta"] = torch.nn.functional.softplus(inputs["delta"]) + 0.5

    io = ("u", "delta", "B", "C")
    return {k: v.to(device=device, dtype=dtype if k in io else torch.float32).contiguous() for k, v in inputs.items()}


def reference_float64(inputs: dict[str, torch.Tensor], delta_softplus: bool = True) -> torch.Tensor:
    """The PyTorch reference on the same (already rounded) inputs, in float64."""
    from mmad.plugins.selective_scan import selective_scan_ref

    x = {k: v.detach().to("cpu", torch.float64) for k, v in inputs.items()}
    # The reference steps through L with small tensors: one thread is several times faster than many
    # fighting over a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return selective_scan_ref(
            x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["delta_bias"], delta_softplus=delta_softplus
        )
    finally:
        torch.set_num_threads(threads)


def relative_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    """max |y - ref| / max |ref|: the contract's measure."""
    y64 = y.detach().to("cpu", torch.float64)
    return float((y64 - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


# ---- host harness: raw files in, raw file out -------------------------------------------------------------

_LAYOUT = re.compile(r"layout chunk_len=(\d+) nchunks=(\d+) block_channels=(\d+) channel_tiles=(\d+)")


def write_inputs(folder: Path, inputs: dict[str, torch.Tensor]) -> None:
    """One raw little-endian file per input, named as the harness expects (u.bin, ..., delta_bias.bin)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in SCAN_INPUTS:
        (folder / f"{name}.bin").write_bytes(inputs[name].detach().cpu().contiguous().numpy().tobytes())


def run_host_harness(
    harness: Path,
    folder: Path,
    inputs: dict[str, torch.Tensor],
    delta_softplus: bool = True,
    chunk_len: int = 0,
    num_sms: int = 16,
) -> tuple[torch.Tensor, dict[str, int]]:
    """Run the harness on `inputs`; returns (y [B, D, L] in u's dtype, the launch layout it used)."""
    write_inputs(folder, inputs)
    b, d, length = inputs["u"].shape
    _, groups, n, _ = inputs["B"].shape
    dtype = inputs["u"].dtype
    if dtype not in (torch.float32, torch.float16):
        raise ValueError(f"host harness: u must be float32 or float16, got {dtype}")
    tag = "f16" if dtype == torch.float16 else "f32"
    cmd = [
        str(harness),
        str(folder),
        str(b),
        str(d),
        str(length),
        str(n),
        str(groups),
        str(int(delta_softplus)),
        tag,
        str(chunk_len),
        str(num_sms),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"host harness failed ({' '.join(cmd)}): {proc.stderr.strip()}")
    match = _LAYOUT.search(proc.stdout)
    if match is None:
        raise RuntimeError(f"host harness printed no layout line: {proc.stdout!r}")
    layout = dict(zip(("chunk_len", "nchunks", "block_channels", "channel_tiles"), map(int, match.groups())))
    np_dtype = np.float16 if dtype == torch.float16 else np.float32
    y = np.fromfile(folder / "y.bin", dtype=np_dtype).reshape(b, d, length)
    return torch.from_numpy(y), layout
