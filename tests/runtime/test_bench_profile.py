"""`mmad bench --profile` (runtime/bench/profile.py): each backend's inference time by op type, from
onnxruntime's profiler, OpenVINO's performance counters and PyTorch's profiler, in report.json and report.md."""

import json

import numpy as np
import pytest

from mmad.runtime.backends.onnxruntime import OnnxRuntimeBackend, kernel_times
from mmad.runtime.bench.profile import PERMUTATION_OPS, op_shares, permutation_share, profile_backend
from mmad.runtime.cli import main as mmad
from mmad.runtime.contract import SCAN_OP_TYPE

FAST = ["--iters", "2", "--warmup", "1", "--threads", "1", "--max-images", "2", "--no-plots"]


def _images(backend, count: int = 1) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (count, backend.info.height, backend.info.width, 3), dtype=np.uint8)


def test_shares_are_fractions_of_the_summed_times():
    ops = op_shares({"Conv": 6.0, "Gather": 1.0, SCAN_OP_TYPE: 3.0})
    assert [o["op"] for o in ops] == ["Conv", SCAN_OP_TYPE, "Gather"]
    assert [o["share"] for o in ops] == pytest.approx([0.6, 0.3, 0.1])
    assert permutation_share(ops) == pytest.approx(0.1)
    assert "Gather" in PERMUTATION_OPS and "aten::gather" in PERMUTATION_OPS


def test_kernel_times_skip_the_warm_up_run_and_refuse_a_short_trace():
    trace = [
        {"cat": "Session", "name": "model_run", "ts": 0, "dur": 50},
        {"cat": "Node", "name": "conv_kernel_time", "ts": 10, "dur": 40, "args": {"op_name": "Conv"}},
        {"cat": "Session", "name": "model_run", "ts": 100, "dur": 50},
        {"cat": "Node", "name": "conv_kernel_time", "ts": 110, "dur": 30, "args": {"op_name": "Conv"}},
        {"cat": "Node", "name": "conv_fence_before", "ts": 140, "dur": 5, "args": {"op_name": "Conv"}},
        {"cat": "Node", "name": "g_kernel_time", "ts": 145, "dur": 2, "args": {"op_name": "Gather"}},
    ]
    assert kernel_times(trace, skip_runs=1, runs=1) == pytest.approx({"Conv": 0.030, "Gather": 0.002})
    with pytest.raises(RuntimeError, match="holds 2 runs, expected 3"):
        kernel_times(trace, skip_runs=1, runs=2)


def test_onnxruntime_profile_of_the_synthetic_model(synthetic_onnx):
    backend = OnnxRuntimeBackend(synthetic_onnx, provider="cpu", threads=1)
    try:
        profile = profile_backend(backend, _images(backend), runs=3)
    finally:
        backend.close()
    assert profile["profiler"] == "onnxruntime profiler" and profile["runs"] == 3
    assert sum(o["share"] for o in profile["ops"]) == pytest.approx(1.0)
    assert profile["total_ms"] > 0 and all(o["ms"] >= 0 for o in profile["ops"])
    assert len(profile["ops"]) >= 2  # the synthetic graph has more than one op type


@pytest.fixture(scope="module")
def profiled_report(tiny_checkpoint, generated_dataset, tmp_path_factory) -> dict:
    """`mmad bench --profile` on the tiny checkpoint: PyTorch eager and the custom-op graph in onnxruntime."""
    pytest.importorskip("onnxruntime_extensions")
    report_dir = tmp_path_factory.mktemp("profiled")
    args = ["bench", "--model", str(tiny_checkpoint), "--report", str(report_dir), "--images", str(generated_dataset)]
    backends = ["--backends", "pytorch,onnxruntime-custom-op", "--profile", "--profile-runs", "2"]
    assert mmad([*args, *backends, *FAST]) == 0
    report = json.loads((report_dir / "report.json").read_text())
    report["markdown"] = (report_dir / "report.md").read_text()
    report["folder"] = report_dir
    return report


def test_bench_profile_names_the_scan_and_sums_to_the_whole(profiled_report):
    entries = {b["name"]: b for b in profiled_report["backends"]}
    assert set(entries) == {"pytorch", "onnxruntime-custom-op"}
    scan_names = {"pytorch": "_CpuScan", "onnxruntime-custom-op": SCAN_OP_TYPE}
    for name, entry in entries.items():
        profile = entry["profile"]
        assert profile["runs"] == 2 and profile["batch"] == 1
        assert sum(o["share"] for o in profile["ops"]) == pytest.approx(1.0)
        by_op = {o["op"]: o for o in profile["ops"]}
        assert by_op[scan_names[name]]["share"] > 0, f"{name}: the scan op is missing from the profile"
        assert 0.0 <= profile["permutation_share"] < 1.0
    assert "aten::gather" in {o["op"] for o in entries["pytorch"]["profile"]["ops"]}
    assert "Gather" in {o["op"] for o in entries["onnxruntime-custom-op"]["profile"]["ops"]}
    assert profiled_report["settings"]["profile_runs"] == 2
    text = profiled_report["markdown"]
    assert "## Where the inference time goes (--profile)" in text
    assert f"| {SCAN_OP_TYPE} |" in text and "| _CpuScan |" in text and "scan-order permutation" in text


def test_openvino_profile_names_the_scan_extension(profiled_report):
    """OpenVINO counts extension ops as "Reference" layers; the profile names them by op type."""
    pytest.importorskip("openvino")
    from mmad.runtime.backends.openvino import OpenVinoBackend
    from mmad.runtime.errors import ConfigError

    graph = profiled_report["folder"] / "models" / "model_custom_op.onnx"
    try:
        backend = OpenVinoBackend(graph, threads=1)
    except ConfigError as err:  # the extension is built by the openvino tests; here it may be missing
        pytest.skip(f"no SelectiveScan extension for OpenVINO here: {err}")
    try:
        profile = profile_backend(backend, _images(backend), runs=2)
    finally:
        backend.close()
    by_op = {o["op"]: o for o in profile["ops"]}
    assert profile["profiler"] == "OpenVINO performance counters"
    assert sum(o["share"] for o in profile["ops"]) == pytest.approx(1.0)
    assert by_op[SCAN_OP_TYPE]["share"] > 0 and "Reference" not in by_op
