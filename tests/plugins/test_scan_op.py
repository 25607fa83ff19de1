"""The selective scan's C++ CPU path and its public op, against the float64 reference.

Tolerances are the op contract's (plugins/selective_scan/README.md): max|impl - ref| / max|ref| with the
reference in float64 on the same input values. Forward references come from `selective_scan_ref`, except
at the big MMAD shapes in the default run, where they come, like all gradient references, from
`plain_loop_scan` in float64: the reference's loop sliced with unbind (the reference's forward takes
seconds there, its backward is quadratic in L). test_plain_loop_is_the_reference pins the two together;
the `slow` tests compare every big shape with `selective_scan_ref` itself.
"""

from __future__ import annotations

import functools
import logging
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mmad.plugins.selective_scan.op as scan_pkg
from mmad.plugins.selective_scan import cpu, resolve_backend, selective_scan, selective_scan_ref
from mmad.plugins.selective_scan.bench_cpu import make_inputs, plain_loop_scan
from mmad.plugins.selective_scan.problems import MMAD_STAGE_SHAPES, SMALL_SHAPES
from mmad.runtime.contract import SCAN_TOL_FP16, SCAN_TOL_FP32

needs_cpp = pytest.mark.skipif(not cpu.is_available(), reason=f"C++ scan unavailable: {cpu.unavailable_reason()}")

GRAD_NAMES = ("du", "ddelta", "dA", "dB", "dC", "dD", "ddelta_bias")
# Big shapes whose gradients are checked (all five are checked forward).
GRAD_STAGE_SHAPES = tuple(MMAD_STAGE_SHAPES[i] for i in (1, 2, 4))  # (2048, 64), (1024, 256), (256, 4096)


def rel_err(impl: torch.Tensor, ref: torch.Tensor) -> float:
    """max|impl - ref| / max|ref|; the absolute error where the reference is all zero (dA at L = 1)."""
    impl, ref = impl.double(), ref.double()
    scale = ref.abs().max().item()
    return (impl - ref).abs().max().item() / (scale if scale > 0 else 1.0)


def scan_inputs(batch, dim, length, nstate=16, groups=8, softplus=True, seed=0, dtype=torch.float32):
    """Realistic inputs (A = -exp(A_log), Mamba's dt range) in the contract's dtypes: u, delta, B, C
    in `dtype`; A, D, delta_bias float32 (float64 when dtype is float64). Without softplus, delta
    carries the same positive step sizes directly."""
    x = list(make_inputs(batch, dim, length, nstate, groups, dtype=torch.float64, seed=seed))
    if not softplus:
        x[1] = F.softplus(x[1] + x[6][:, None]) - x[6][:, None]
    params = torch.float64 if dtype == torch.float64 else torch.float32
    return tuple(t.to(dtype if i in (0, 1, 3, 4) else params) for i, t in enumerate(x))


def grads_of(scan, inputs, dy):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    y = scan(*leaves)
    y.backward(dy.to(y.dtype))
    return y.detach(), [t.grad for t in leaves]


def check_against_reference(inputs, softplus, tol, forward_oracle="reference", check_grads=True):
    """C++ forward (and backward) on `inputs` against float64 on the same values.

    forward_oracle: "reference" (selective_scan_ref) or "loop" (plain_loop_scan, for big shapes where
    the reference takes many seconds); gradients always come from the loop.
    """
    wide = [t.double() for t in inputs]
    dy = torch.randn(inputs[0].shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    cpp = functools.partial(selective_scan, delta_softplus=softplus, backend="cpu")
    loop = functools.partial(plain_loop_scan, delta_softplus=softplus)
    if check_grads:
        y, grads = grads_of(cpp, inputs, dy)
        loop_y, ref_grads = grads_of(loop, wide, dy)
    else:
        with torch.no_grad():
            y = cpp(*inputs)
            loop_y = loop(*wide) if forward_oracle == "loop" else None
    if forward_oracle == "reference":
        with torch.no_grad():
            ref_y = selective_scan_ref(*wide, delta_softplus=softplus)
    else:
        ref_y = loop_y
    assert y.dtype == inputs[0].dtype and y.shape == inputs[0].shape
    err = rel_err(y, ref_y)
    assert err <= tol, f"forward: {err:.2e} > {tol:.0e}"
    if check_grads:
        for name, g, ref_g, x in zip(GRAD_NAMES, grads, ref_grads, inputs):
            assert g.dtype == x.dtype and g.shape == x.shape, name
            err = rel_err(g, ref_g)
            assert err <= tol, f"{name}: {err:.2e} > {tol:.0e}"


# --- numerics -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SMALL_SHAPES[:2] + SMALL_SHAPES[3:4], ids=str)
@pytest.mark.parametrize("softplus", [True, False])
def test_plain_loop_is_the_reference(shape, softplus):
    """The gradient oracle: plain_loop_scan equals selective_scan_ref in value and in gradient."""
    inputs = scan_inputs(*shape, softplus=softplus, dtype=torch.float64)
    dy = torch.randn(inputs[0].shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y_ref, g_ref = grads_of(lambda *x: selective_scan_ref(*x, delta_softplus=softplus), inputs, dy)
    y_loop, g_loop = grads_of(lambda *x: plain_loop_scan(*x, delta_softplus=softplus), inputs, dy)
    assert rel_err(y_loop, y_ref) < 1e-12
    for name, a, b in zip(GRAD_NAMES, g_loop, g_ref):
        assert rel_err(a, b) < 1e-12, name


@needs_cpp
@pytest.mark.parametrize("shape", MMAD_STAGE_SHAPES, ids=lambda s: f"D{s[0]}-L{s[1]}")
def test_forward_stage_shapes_fp32(shape):
    dim, length = shape
    check_against_reference(scan_inputs(1, dim, length), True, SCAN_TOL_FP32, forward_oracle="loop", check_grads=False)


@needs_cpp
@pytest.mark.parametrize("shape", GRAD_STAGE_SHAPES, ids=lambda s: f"D{s[0]}-L{s[1]}")
def test_backward_stage_shapes_fp32(shape):
    dim, length = shape
    check_against_reference(scan_inputs(1, dim, length), True, SCAN_TOL_FP32, forward_oracle="loop")


@needs_cpp
def test_forward_stage_shape_against_selective_scan_ref():
    """One MMAD stage shape straight against the reference (the others: the slow test below)."""
    check_against_reference(scan_inputs(1, 2048, 64), True, SCAN_TOL_FP32, check_grads=False)


@needs_cpp
@pytest.mark.slow
@pytest.mark.parametrize("shape", MMAD_STAGE_SHAPES, ids=lambda s: f"D{s[0]}-L{s[1]}")
def test_forward_stage_shapes_against_selective_scan_ref(shape):
    check_against_reference(scan_inputs(1, *shape), True, SCAN_TOL_FP32, check_grads=False)


@needs_cpp
@pytest.mark.parametrize("shape", SMALL_SHAPES, ids=str)
@pytest.mark.parametrize("softplus", [True, False])
def test_forward_backward_small_fp32(shape, softplus):
    check_against_reference(scan_inputs(*shape, softplus=softplus), softplus, SCAN_TOL_FP32)


@needs_cpp
@pytest.mark.parametrize("shape", [SMALL_SHAPES[1], SMALL_SHAPES[2], (1, 2048, 64, 16, 8)], ids=str)
def test_forward_backward_fp16_io(shape):
    inputs = scan_inputs(*shape, dtype=torch.float16)
    assert inputs[2].dtype == torch.float32  # A, D, delta_bias stay float32 (contract)
    check_against_reference(inputs, True, SCAN_TOL_FP16)


@needs_cpp
@pytest.mark.parametrize("softplus", [True, False])
def test_wide_step_sizes_and_softplus_threshold(softplus):
    """Pre-activations on both sides of softplus' linear threshold (20), large steps, small |A|."""
    gen = torch.Generator().manual_seed(3)
    batch, dim, length, nstate, groups = 2, 16, 40, 16, 4
    u = torch.randn(batch, dim, length, generator=gen)
    delta = torch.empty(batch, dim, length).uniform_(-30.0 if softplus else 0.0, 30.0, generator=gen)
    A = -0.01 * torch.exp(torch.randn(dim, nstate, generator=gen))
    Bm = torch.randn(batch, groups, nstate, length, generator=gen)
    Cm = torch.randn(batch, groups, nstate, length, generator=gen)
    D = torch.randn(dim, generator=gen)
    bias = 0.5 * torch.randn(dim, generator=gen)
    check_against_reference((u, delta, A, Bm, Cm, D, bias), softplus, SCAN_TOL_FP32)


@needs_cpp
@pytest.mark.parametrize("shape", [(2, 4, 6, 3, 2), (1, 2, 5, 16, 1)], ids=str)
@pytest.mark.parametrize("softplus", [True, False])
def test_gradcheck_float64(shape, softplus):
    inputs = [t.detach().requires_grad_() for t in scan_inputs(*shape, softplus=softplus, dtype=torch.float64)]
    assert torch.autograd.gradcheck(
        lambda *x: selective_scan(*x, delta_softplus=softplus, backend="cpu"), inputs, eps=1e-6, atol=1e-6
    )


@needs_cpp
def test_thread_count_does_not_change_results():
    # One group and more threads than (b, g) pairs: the backward splits the group's channels.
    x = [t.numpy() for t in scan_inputs(1, 64, 2048, groups=1)]
    dy = np.random.default_rng(0).standard_normal(x[0].shape).astype(np.float32)
    y1 = cpu.scan_forward(*x, n_threads=1)
    y2 = cpu.scan_forward(*x, n_threads=4)
    assert np.array_equal(y1, y2)  # rows are independent: same arithmetic whatever the split
    for name, a, b in zip(GRAD_NAMES, cpu.scan_backward(*x, dy, n_threads=1), cpu.scan_backward(*x, dy, n_threads=4)):
        assert rel_err(torch.from_numpy(a), torch.from_numpy(b)) < 1e-6, name


@needs_cpp
def test_empty_length():
    x = [t.numpy() for t in scan_inputs(2, 16, 1)]
    x = [a[..., :0] if i in (0, 1, 3, 4) else a for i, a in enumerate(x)]
    assert cpu.scan_forward(*x).shape == (2, 16, 0)
    grads = cpu.scan_backward(*x, np.zeros((2, 16, 0), np.float32))
    assert grads.dA.shape == (16, 16) and not grads.dA.any() and not grads.dD.any()


@needs_cpp
def test_process_floating_point_mode_untouched():
    """Loading and running the library leaves denormals alone in the host process (no crtfastmath)."""
    cpu.load_library()
    cpu.scan_forward(*(t.numpy() for t in scan_inputs(1, 8, 10)))
    tiny = 1e-39  # a float32 denormal
    assert (np.array([tiny], np.float32) * np.float32(1.0))[0] != 0
    assert (torch.tensor([tiny]) * 1.0).item() != 0


@needs_cpp
def test_cpu_module_runs_without_torch():
    """cpu.py is numpy-only: import it from its package in a process where importing torch fails."""
    script = (
        "import sys, numpy as np\n"
        "sys.modules['torch'] = None\n"
        "from mmad.plugins.selective_scan import cpu\n"
        "rng = np.random.default_rng(0)\n"
        "u, dl = rng.standard_normal((2, 1, 4, 5)).astype(np.float32)\n"
        "A = -np.ones((4, 3), np.float32); B = rng.standard_normal((1, 2, 3, 5)).astype(np.float32)\n"
        "y = cpu.scan_forward(u, dl, A, B, B, np.ones(4, np.float32), np.zeros(4, np.float32))\n"
        "assert y.shape == (1, 4, 5) and np.isfinite(y).all()\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


# --- dispatch and errors --------------------------------------------------------------------------


def test_backend_names():
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("cuda", "cpu")
    assert resolve_backend("reference", "cpu") == "reference"
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        resolve_backend("mamba", "cpu")
    with pytest.raises(ValueError, match="needs CPU tensors"):
        resolve_backend("cpu", "cuda")


@needs_cpp
def test_auto_picks_cpp_on_cpu():
    assert resolve_backend("auto", "cpu") == "cpu"
    inputs = scan_inputs(2, 16, 9)
    with torch.no_grad():
        auto = selective_scan(*inputs)
        ref = selective_scan(*inputs, backend="reference")
    assert rel_err(auto, ref) <= SCAN_TOL_FP32


def test_callable_backend_gets_the_checked_call():
    calls = []

    def hook(*tensors, delta_softplus):
        calls.append((len(tensors), delta_softplus))
        return tensors[0]

    inputs = scan_inputs(1, 8, 5)
    assert selective_scan(*inputs, delta_softplus=False, backend=hook) is inputs[0]
    assert calls == [(7, False)]
    with pytest.raises(ValueError, match="delta must match u"):
        selective_scan(inputs[0], inputs[0][..., :4], *inputs[2:], backend=hook)
    assert len(calls) == 1


def test_reference_backend_is_the_reference():
    inputs = scan_inputs(2, 16, 9)
    assert torch.equal(selective_scan(*inputs, backend="reference"), selective_scan_ref(*inputs))


def test_auto_on_cuda_uses_mamba_when_it_imports(monkeypatch):
    monkeypatch.setattr(scan_pkg, "_mamba_scan_fn", lambda: lambda *a, **k: None)
    assert resolve_backend("auto", "cuda") == "mamba"
    assert resolve_backend("mamba", "cuda") == "mamba"


def test_auto_falls_back_to_reference_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(scan_pkg, "_mamba_scan_fn", lambda: None)
    monkeypatch.setattr(scan_pkg, "_warned_slow", False)
    monkeypatch.setattr(cpu, "is_available", lambda: False)
    monkeypatch.setattr(cpu, "unavailable_reason", lambda: "no C++ compiler found")
    with caplog.at_level(logging.WARNING, logger=scan_pkg.__name__):
        assert resolve_backend("auto", "cuda") == "reference"
        assert resolve_backend("auto", "cpu") == "reference"
        inputs = scan_inputs(1, 8, 5)
        assert torch.equal(selective_scan(*inputs), selective_scan_ref(*inputs))
    slow = [r for r in caplog.records if "slow PyTorch reference" in r.getMessage()]
    assert len(slow) == 1
    with pytest.raises(ImportError, match="mamba-ssm"):
        resolve_backend("mamba", "cuda")


@pytest.mark.parametrize(
    "index, bad_shape, message",
    [
        (0, (2, 16), "u must be"),
        (1, (2, 16, 8), "delta must match u"),
        (2, (15, 16), "A must be"),
        (3, (2, 4, 15, 9), "B must be"),
        (4, (2, 4, 16, 8), "C must match B"),
        (5, (15,), "D must be"),
        (6, (16, 1), "delta_bias must be"),
    ],
)
def test_bad_shapes_name_the_tensor(index, bad_shape, message):
    inputs = list(scan_inputs(2, 16, 9, groups=4))
    inputs[index] = torch.zeros(bad_shape)
    for backend in ("auto", "reference"):
        with pytest.raises(ValueError, match=message):
            selective_scan(*inputs, backend=backend)
    with pytest.raises(ValueError, match=message):
        cpu.scan_forward(*(t.numpy() for t in inputs))


def test_groups_must_divide_channels():
    inputs = list(scan_inputs(2, 16, 9, groups=4))
    inputs[3] = inputs[4] = torch.zeros(2, 3, 16, 9)
    with pytest.raises(ValueError, match="G=3"):
        selective_scan(*inputs)
    with pytest.raises(ValueError, match="G=3"):
        cpu.scan_forward(*(t.numpy() for t in inputs))


def test_bad_dtype_and_device():
    inputs = list(scan_inputs(1, 8, 5))
    with pytest.raises(ValueError, match="u must be float16, float32 or float64"):
        selective_scan(inputs[0].long(), *inputs[1:])
    inputs[2] = inputs[2].to("meta")
    with pytest.raises(ValueError, match="A is on meta"):
        selective_scan(*inputs)


@needs_cpp
def test_state_size_limit_is_a_clear_error():
    x = [t.numpy() for t in scan_inputs(1, 4, 3, nstate=300, groups=1)]
    with pytest.raises(ValueError, match="maximum state size \\(256\\)"):
        cpu.scan_forward(*x)


@needs_cpp
def test_backward_rejects_mismatched_dy():
    x = [t.numpy() for t in scan_inputs(1, 8, 5)]
    with pytest.raises(ValueError, match="dy must match u"):
        cpu.scan_backward(*x, np.zeros((1, 8, 4), np.float32))


# --- the onnxruntime op (onnxruntime_op.py) ------------------------------------------------------
@needs_cpp
def test_onnxruntime_op_matches_the_reference_at_any_thread_count(tmp_path):
    """The node through onnxruntime-extensions (the array hook, the scan's own threads) against the float64
    reference, at one of MMAD's stage shapes; the result does not depend on the scan's thread count."""
    pytest.importorskip("onnxruntime_extensions")
    from onnx import save

    from mmad.export.portable import single_scan_model
    from mmad.plugins.selective_scan import onnxruntime_op
    from mmad.runtime.contract import SCAN_INPUTS

    dim, length = MMAD_STAGE_SHAPES[3]
    x = scan_inputs(1, dim, length)
    feed = {name: t.numpy() for name, t in zip(SCAN_INPUTS, x)}
    save(single_scan_model(dim, 16, 8, length), tmp_path / "scan.onnx")
    session = onnxruntime_op.inference_session(tmp_path / "scan.onnx", threads=1)
    (y1,) = session.run(None, feed)
    onnxruntime_op.set_scan_threads(2)
    (y2,) = session.run(None, feed)
    ref = plain_loop_scan(*(t.double() for t in x))
    assert rel_err(torch.from_numpy(y1), ref) <= SCAN_TOL_FP32
    np.testing.assert_array_equal(y1, y2)


@needs_cpp
def test_onnxruntime_op_hook_passes_other_python_ops_on(tmp_path):
    """The array hook answers only SelectiveScan; another onnxruntime-extensions Python op still runs."""
    ext = pytest.importorskip("onnxruntime_extensions")
    import onnxruntime
    from onnx import TensorProto, helper, save

    from mmad.plugins.selective_scan import onnxruntime_op

    onnxruntime_op.register_selective_scan_op()

    @ext.onnx_op(op_type="MmadTestNegate", inputs=[ext.PyCustomOpDef.dt_float], outputs=[ext.PyCustomOpDef.dt_float])
    def negate(x):
        return -x

    node = helper.make_node("MmadTestNegate", ["x"], ["y"], domain="ai.onnx.contrib")
    value = helper.make_tensor_value_info
    graph = helper.make_graph([node], "neg", [value("x", TensorProto.FLOAT, [3])], [value("y", TensorProto.FLOAT, [3])])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.contrib", 1)]
    save(helper.make_model(graph, opset_imports=opsets), tmp_path / "neg.onnx")
    options = onnxruntime_op.session_options_with_custom_ops()
    session = onnxruntime.InferenceSession(str(tmp_path / "neg.onnx"), options, providers=["CPUExecutionProvider"])
    x = np.array([1.0, -2.0, 3.5], np.float32)
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], -x)


def test_onnxruntime_op_hook_returns_the_array_not_a_list():
    """The hook the op installs answers its own op id with the output array (the extension copies its buffer)
    and hands every other id to the hook installed before, with the same (id, feed, attributes) call."""
    from types import SimpleNamespace

    from mmad.plugins.selective_scan import onnxruntime_op

    installed, stock_calls = [], []

    def stock(k_id, feed, attributes):  # the extension's own hook: shape and a flat list
        stock_calls.append(k_id)
        return k_id, feed[0].shape, feed[0].flatten().tolist()

    ext = SimpleNamespace(
        _ocos=SimpleNamespace(_on_pyop_invocation=stock),
        PyCustomOpDef=SimpleNamespace(install_hooker=installed.append),
    )
    kernel = lambda x, **attrs: x * float(attrs["scale"])  # noqa: E731
    assert onnxruntime_op._install_array_hook(ext, 7, kernel)
    (hook,) = installed
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    k_id, shape, y = hook(7, [x], {"scale": "2"})
    assert (k_id, shape) == (7, (2, 3)) and isinstance(y, np.ndarray) and y.flags.c_contiguous
    np.testing.assert_array_equal(y, 2 * x)
    assert hook(8, [x], {}) == (8, (2, 3), x.flatten().tolist()) and stock_calls == [8]
    assert not onnxruntime_op._install_array_hook(SimpleNamespace(), 7, kernel)  # no hook to replace: unchanged
