"""The selective-scan CUDA kernel's logic, checked on the CPU: the host harness (nvcc-built, no GPU) runs the
kernel's own block and thread functions over every index and is compared with the float64 reference at the
contract's tolerances, on every MMAD stage shape, odd lengths and B > 1, FP32 and FP16, one chunk and many.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import torch

from mmad.plugins.selective_scan import build as scan_build
from mmad.plugins.selective_scan import problems
from mmad.runtime import contract

PLUGIN_INFO = scan_build.PLUGINS_DIR / "selective_scan" / "native" / "tensorrt" / "plugin_info.h"

Problem = problems.Problem

TOL = {torch.float32: contract.SCAN_TOL_FP32, torch.float16: contract.SCAN_TOL_FP16}
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])


@pytest.fixture(scope="session")
def harness(tmp_path_factory) -> Path:
    missing = scan_build.tools_available()
    if missing:
        pytest.skip(f"cannot build the host harness: {missing}")
    cfg = scan_build.BuildConfig(
        tmp_path_factory.mktemp("scan-build"), cuda_archs="87", trt_plugin="OFF", targets=(scan_build.HARNESS,), jobs=2
    )
    out, seconds = scan_build.build(cfg)
    print(f"host harness built in {seconds:.1f} s")
    return out / scan_build.HARNESS


def _check(harness, tmp_path, problem, dtype, *, seed=0, slow_decay=False, softplus=True, chunk_len=0, num_sms=16):
    inputs = problems.make_inputs(problem, dtype, seed=seed, slow_decay=slow_decay, positive_delta=not softplus)
    y, layout = problems.run_host_harness(
        harness, tmp_path, inputs, delta_softplus=softplus, chunk_len=chunk_len, num_sms=num_sms
    )
    assert y.dtype == dtype and y.shape == inputs["u"].shape
    err = problems.relative_error(y, problems.reference_float64(inputs, delta_softplus=softplus))
    assert err <= TOL[dtype], f"{problem.label} {dtype}: relative error {err:.3g} > {TOL[dtype]}"
    return layout, err


# ---- MMAD's stage shapes, planned as on an Orin (16 SMs) and an H200 (132 SMs) -------------------------------


@DTYPES
@pytest.mark.parametrize("dim,seqlen", problems.MMAD_STAGE_SHAPES, ids=lambda v: str(v))
def test_mmad_stage_shapes_match_reference(harness, tmp_path, dim, seqlen, dtype):
    _check(harness, tmp_path, Problem(1, dim, seqlen), dtype, num_sms=16)


@pytest.mark.parametrize("dim,seqlen", [(4096, 256), (256, 4096)], ids=["D4096-L256", "D256-L4096"])
def test_h200_planning_matches_reference(harness, tmp_path, dim, seqlen):
    layout, _ = _check(harness, tmp_path, Problem(1, dim, seqlen), torch.float32, num_sms=132)
    assert layout["nchunks"] > 1  # batch 1 is cut into chunks to fill the GPU


# ---- odd lengths, B > 1, no softplus --------------------------------------------------------------------------


@DTYPES
@pytest.mark.parametrize("seqlen", [1, 7, 1000])
def test_odd_lengths_match_reference(harness, tmp_path, seqlen, dtype):
    _check(harness, tmp_path, Problem(1, 256, seqlen), dtype, chunk_len=64 if seqlen == 1000 else 0)


@DTYPES
def test_batch_above_one_matches_reference(harness, tmp_path, dtype):
    layout, _ = _check(harness, tmp_path, Problem(3, 512, 300), dtype, chunk_len=64)
    assert layout["nchunks"] == 5


def test_without_softplus_matches_reference(harness, tmp_path):
    _check(harness, tmp_path, Problem(2, 128, 200), torch.float32, softplus=False, chunk_len=32)


def test_small_state_and_group_sizes(harness, tmp_path):
    # N < 16 (zero-padded states), channels per group not a multiple of a warp, one channel per group.
    _check(harness, tmp_path, Problem(2, 24, 77, dstate=5, ngroups=2), torch.float32, chunk_len=32)
    _check(harness, tmp_path, Problem(1, 8, 40, dstate=16, ngroups=8), torch.float32, chunk_len=32)


# ---- the carry across chunks: states that remember thousands of steps ---------------------------------------


@DTYPES
@pytest.mark.parametrize("chunk_len", [0, 32, 256, 4096], ids=lambda c: f"chunk{c}")
def test_slow_decay_carries_state_across_chunks(harness, tmp_path, chunk_len, dtype):
    layout, _ = _check(
        harness, tmp_path, Problem(1, 256, 4096), dtype, slow_decay=True, chunk_len=chunk_len, num_sms=132
    )
    assert layout["nchunks"] == (4096 // chunk_len if chunk_len else 64)  # planned: the most chunks allowed


def test_chunking_changes_nothing_beyond_rounding(harness, tmp_path):
    """One chunk (plain sequential scan) and 128 chunks agree to float32 rounding."""
    inputs = problems.make_inputs(Problem(1, 64, 4096), torch.float32, seed=3, slow_decay=True)
    one, lay1 = problems.run_host_harness(harness, tmp_path / "one", inputs, chunk_len=4096)
    many, lay2 = problems.run_host_harness(harness, tmp_path / "many", inputs, chunk_len=32)
    assert (lay1["nchunks"], lay2["nchunks"]) == (1, 128)
    assert problems.relative_error(many, one.double()) <= contract.SCAN_TOL_FP32


# ---- bad input is refused with a message ------------------------------------------------------------------------


def test_harness_rejects_wrong_file_size(harness, tmp_path):
    inputs = problems.make_inputs(Problem(1, 16, 10, ngroups=2), torch.float32)
    inputs["B"] = inputs["B"][..., :9].contiguous()
    with pytest.raises(RuntimeError, match=r"B\.bin must hold exactly"):
        problems.run_host_harness(harness, tmp_path, inputs)


def test_harness_rejects_groups_not_dividing_channels(harness, tmp_path):
    inputs = problems.make_inputs(Problem(1, 12, 10, ngroups=5), torch.float32)
    with pytest.raises(RuntimeError, match="must be >= 1 and divide D"):
        problems.run_host_harness(harness, tmp_path, inputs)


def test_harness_rejects_more_chunks_than_the_grid_holds(harness, tmp_path):
    """Issue 10.8: an explicit chunk length that cuts L into more than 65535 chunks (CUDA's gridDim.y limit) is
    refused when planning, before anything is read or launched."""
    seqlen = 32 * 65535 + 1  # chunk_len 32: 65536 chunks
    proc = subprocess.run(
        [str(harness), str(tmp_path), "1", "1", str(seqlen), "1", "1", "1", "f32", "32", "16"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "exceed the grid's y limit (65535)" in proc.stderr, proc.stderr
    proc = subprocess.run(  # one chunk fewer is planned (and then wants its inputs)
        [str(harness), str(tmp_path), "1", "1", str(seqlen - 1), "1", "1", "1", "f32", "32", "16"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "grid" not in proc.stderr and ".bin" in proc.stderr, proc.stderr


# ---- the C++ names equal the contract's ---------------------------------------------------------------------------


def test_plugin_identity_matches_contract():
    text = PLUGIN_INFO.read_text()

    def constant(name: str) -> str:
        match = re.search(rf'{name}\[\]\s*=\s*"([^"]*)"', text)
        assert match, f"plugin_info.h defines no {name}"
        return match.group(1)

    assert constant("kScanPluginName") == contract.SCAN_PLUGIN_NAME
    assert constant("kScanPluginVersion") == contract.SCAN_PLUGIN_VERSION
    assert constant("kScanPluginNamespace") == contract.SCAN_PLUGIN_NAMESPACE
    assert constant("kScanFieldSoftplus") == contract.SCAN_ATTR_SOFTPLUS
    assert int(re.search(r"kScanNbInputs\s*=\s*(\d+)", text).group(1)) == len(contract.SCAN_INPUTS)
