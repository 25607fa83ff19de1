"""The selective-scan CUDA kernel through its ctypes path (libmmad_selective_scan.so, the launcher the TensorRT
plugin calls): on a CUDA GPU against the float64 reference at the contract's tolerances (tests marked gpu,
skipped without one), and, everywhere, the library's C ABI and its refusal of bad input.

MMAD_SCAN_LIB=/path/to/libmmad_selective_scan.so uses a library built already instead of building one.
"""

from __future__ import annotations

import os

import pytest
import torch

from mmad.plugins.selective_scan import build as scan_build
from mmad.plugins.selective_scan import cuda as scan_cuda
from mmad.plugins.selective_scan import problems
from mmad.runtime import contract

Problem = problems.Problem

HAS_GPU = torch.cuda.is_available()
TOL = {torch.float32: contract.SCAN_TOL_FP32, torch.float16: contract.SCAN_TOL_FP16}
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])


def _arch() -> str:
    if HAS_GPU:
        major, minor = torch.cuda.get_device_capability()
        return f"{major}{minor}"
    return "87"


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    prebuilt = os.environ.get("MMAD_SCAN_LIB")  # a libmmad_selective_scan.so built already (gpu_check.sh)
    if prebuilt:
        return scan_cuda.ScanLibrary(prebuilt)
    missing = scan_build.tools_available()
    if missing:
        pytest.skip(f"cannot build the kernel library: {missing}")
    cfg = scan_build.BuildConfig(
        tmp_path_factory.mktemp("scan-lib"), cuda_archs=_arch(), trt_plugin="OFF", targets=(scan_build.CUDA_LIBRARY,)
    )
    out, seconds = scan_build.build(cfg)
    print(f"libmmad_selective_scan built for sm_{_arch()} in {seconds:.1f} s")
    return scan_cuda.ScanLibrary(scan_build.library_file(out, scan_build.CUDA_LIBRARY))


# ---- everywhere: the C ABI -------------------------------------------------------------------------------------


def test_params_layout_matches_ctypes_mirror(lib):
    # ScanLibrary checks size and every offset on load; a mismatch would have raised in the fixture.
    assert lib.check(scan_cuda.ScanParams()) is not None  # zero sizes are refused


def test_check_explains_bad_problems(lib):
    p = scan_cuda.ScanParams(batch=1, dim=12, seqlen=10, dstate=16, ngroups=5, delta_softplus=1)
    assert "divide D" in lib.check(p)
    p.ngroups, p.dstate = 4, 17
    assert "1..16" in lib.check(p)
    p.dstate, p.chunk_len = 16, 48
    assert "multiple of 32" in lib.check(p)
    p.chunk_len = 0
    assert "must not be null" in lib.check(p)


@pytest.mark.skipif(HAS_GPU, reason="checks the behaviour without a GPU")
def test_launch_without_gpu_reports_an_error(lib):
    u = torch.zeros(1, 8, 4)
    p = scan_cuda.ScanParams(
        batch=1,
        dim=8,
        seqlen=4,
        dstate=4,
        ngroups=1,
        delta_softplus=1,
        u=u.data_ptr(),
        delta=u.data_ptr(),
        A=u.data_ptr(),
        Bmat=u.data_ptr(),
        Cmat=u.data_ptr(),
        y=u.data_ptr(),
    )
    assert lib.check(p) is None
    code = lib.launch(p, 0)
    assert code != 0 and lib.error_string(code)


# ---- on a GPU: the kernel against the reference --------------------------------------------------------------


def _check(lib, problem, dtype, *, slow_decay=False, softplus=True, chunk_len=0, seed=0):
    inputs = problems.make_inputs(
        problem, dtype, seed=seed, slow_decay=slow_decay, positive_delta=not softplus, device="cuda"
    )
    y = scan_cuda.selective_scan_cuda(
        lib, *(inputs[k] for k in contract.SCAN_INPUTS), delta_softplus=softplus, chunk_len=chunk_len
    )
    torch.cuda.synchronize()
    assert y.dtype == dtype and y.shape == inputs["u"].shape and y.is_cuda
    err = problems.relative_error(y, problems.reference_float64(inputs, delta_softplus=softplus))
    assert err <= TOL[dtype], f"{problem.label} {dtype}: relative error {err:.3g} > {TOL[dtype]}"


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")
@DTYPES
@pytest.mark.parametrize("dim,seqlen", problems.MMAD_STAGE_SHAPES, ids=lambda v: str(v))
def test_gpu_mmad_stage_shapes(lib, dim, seqlen, dtype):
    _check(lib, Problem(1, dim, seqlen), dtype)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")
@DTYPES
@pytest.mark.parametrize("batch,dim,seqlen", [(1, 256, 1), (1, 256, 7), (1, 256, 1000), (4, 512, 300), (16, 1024, 256)])
def test_gpu_odd_lengths_and_batches(lib, batch, dim, seqlen, dtype):
    _check(lib, Problem(batch, dim, seqlen), dtype)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")
@DTYPES
@pytest.mark.parametrize("chunk_len", [0, 32, 4096], ids=lambda c: f"chunk{c}")
def test_gpu_slow_decay_across_chunks(lib, chunk_len, dtype):
    _check(lib, Problem(1, 256, 4096), dtype, slow_decay=True, chunk_len=chunk_len)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")
def test_gpu_without_softplus_and_small_groups(lib):
    _check(lib, Problem(2, 128, 200), torch.float32, softplus=False)
    _check(lib, Problem(2, 24, 77, dstate=5, ngroups=2), torch.float32, chunk_len=32)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")
def test_gpu_bad_input_is_refused(lib):
    inputs = problems.make_inputs(Problem(1, 64, 32), torch.float32, device="cuda")
    with pytest.raises(ValueError, match="delta must have shape"):
        scan_cuda.selective_scan_cuda(
            lib, inputs["u"], inputs["delta"][..., :16].contiguous(), *(inputs[k] for k in contract.SCAN_INPUTS[2:])
        )
    with pytest.raises(ValueError, match="A must be torch.float32"):
        scan_cuda.selective_scan_cuda(
            lib, inputs["u"], inputs["delta"], inputs["A"].half(), *(inputs[k] for k in contract.SCAN_INPUTS[3:])
        )
