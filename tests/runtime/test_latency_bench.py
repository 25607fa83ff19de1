"""`mmad bench`: per-stage latency statistics, the deviation check against the reference, the report
files, the environment capture, and PyTorch eager (training.inference) as the checkpoint's reference."""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from mmad.runtime.backends import load_backend
from mmad.runtime.bench.candidates import selected
from mmad.runtime.bench.config import BenchConfig, parse_batches, parse_frame_size
from mmad.runtime.bench.environment import (
    capture_environment,
    clocks_locked,
    parse_nvpmodel,
)
from mmad.runtime.bench.frames import evenly_spread, image_files, load_frames
from mmad.runtime.bench.run import stage_statistics
from mmad.runtime.bench.stream_fps import build_parser as stream_fps_parser
from mmad.runtime.cli import build_parser
from mmad.runtime.cli import main as mmad
from mmad.runtime.contract import MODEL_TOL_FP32, PLUGIN_ENV, THRESHOLD_NORMAL
from mmad.runtime.errors import ConfigError
from mmad.runtime.processing import full_frame, model_input
from mmad.runtime.synthetic import synthetic_model

FAST = ["--iters", "6", "--warmup", "1", "--threads", "1", "--max-images", "4"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def models(synthetic_onnx, tmp_path_factory) -> dict[str, Path]:
    """The synthetic model twice (identical files) and a variant with another pooling window (wrong maps)."""
    root = tmp_path_factory.mktemp("models")
    twin = root / "twin.onnx"
    shutil.copy(synthetic_onnx, twin)
    return {"good": synthetic_onnx, "twin": twin, "wrong": synthetic_model(root / "wrong.onnx", pool=3)}


def read_report(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())


# --- Pieces ----------------------------------------------------------------------------------------
def test_stage_statistics_of_known_samples():
    # 1..100 ms: mean 50.5; linear-interpolated percentiles sit at 1 + q * 99 (e.g. p90 = 90.1).
    stats = stage_statistics(np.arange(1, 101, dtype=float))
    assert stats == pytest.approx({"mean": 50.5, "p50": 50.5, "p90": 90.1, "p99": 99.01, "min": 1.0, "max": 100.0})


def test_option_parsing_and_backend_selection():
    assert parse_batches("1,4") == (1, 4)
    assert parse_frame_size("1280x720") == (1280, 720)
    for bad in ("0", "1,x", ""):
        with pytest.raises(ConfigError, match="--batch"):
            parse_batches(bad)
    with pytest.raises(ConfigError, match="--frame-size"):
        parse_frame_size("720p")
    assert selected("tensorrt-fp16", ["tensorrt"]) and selected("tensorrt-fp16", ["tensorrt-fp16"])
    assert not selected("tensorrt-fp16", ["tensorrt-fp32"]) and not selected("onnxruntime-portable", ["onnx"])
    assert selected("anything", None)


def test_every_bench_option_has_help_text():
    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for parser in (subcommands.choices["bench"], stream_fps_parser()):
        flags = [a.option_strings[0] for a in parser._actions if a.option_strings]
        assert len(flags) >= 8, flags
        for action in parser._actions:
            assert action.help and action.help != argparse.SUPPRESS, action.option_strings
    bench = subcommands.choices["bench"]
    args = bench.parse_args(["--model", "m.onnx", "--report", "r", "--batch", "1,4", "--frame-size", "64x48"])
    assert args.batches == (1, 4) and args.frame_size == (64, 48) and args.plots and args.calib_data == []
    assert bench.parse_args(["--model", "m.onnx", "--report", "r", "--no-plots"]).plots is False


def test_images_from_a_dataset_root_skip_masks_and_spread(tmp_path):
    image = np.full((32, 48, 3), (10, 20, 30), np.uint8)  # RGB
    for rel in (
        "cat/train/good/0.png",
        "cat/test/good/0.png",
        "cat/test/hole/0.png",
        "cat/ground_truth/hole/0_mask.png",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / rel), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    found = image_files(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "cat/test/good/0.png",
        "cat/test/hole/0.png",
        "cat/train/good/0.png",
    ]
    assert evenly_spread(list("abcde"), 3) == ["a", "c", "e"] and evenly_spread([1, 2], 5) == [1, 2]
    frames, info = load_frames(
        BenchConfig(models=["x"], report_dir=tmp_path, images=str(tmp_path), frame_size=(64, 40))
    )
    assert info["count"] == 3 and info["frame_sizes"] == ["64x40"]
    assert frames[0][0, 0].tolist() == [10, 20, 30]  # read as RGB
    with pytest.raises(ConfigError, match="no images"):
        image_files(tmp_path / "cat" / "ground_truth")


def test_environment_capture_and_jetson_parsers(tmp_path):
    env = capture_environment()
    assert env["cpu"]["logical_cpus"] >= 1 and "numpy" in env["libraries"] and env["python"]
    assert parse_nvpmodel("NVPM WARN: fan mode is not set!\nNV Power Mode: MAXN\n0") == {
        "power_mode": "MAXN",
        "power_mode_id": "0",
    }
    assert parse_nvpmodel("NV Power Mode: 15W\n1")["power_mode"] == "15W"

    def freq_folder(name: str, low: str, high: str, prefix: str = "scaling_") -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / f"{prefix}min_freq").write_text(low + "\n")
        (folder / f"{prefix}max_freq").write_text(high + "\n")
        return folder

    cpus = [freq_folder("cpu0", "2201600", "2201600"), freq_folder("cpu1", "2201600", "2201600")]
    gpu = freq_folder("gpu", "1300500000", "1300500000", prefix="")
    assert clocks_locked(cpus, gpu)["locked"] is True
    dvfs = freq_folder("cpu2", "115200", "2201600")
    state = clocks_locked(cpus + [dvfs], gpu)
    assert state["locked"] is False and state["cpu_locked"] is False and state["gpu_locked"] is True


# --- The report, on exported files -----------------------------------------------------------------
def test_report_flags_a_wrong_backend_next_to_its_speed(models, tmp_path):
    report_dir = tmp_path / "report"
    args = [
        "bench",
        "--model",
        str(models["good"]),
        str(models["twin"]),
        str(models["wrong"]),
        "--report",
        str(report_dir),
    ]
    rc = mmad([*args, "--batch", "1,3", "--backends", "onnxruntime", *FAST])
    assert rc == 1  # a report, and the exit code says an FP32 backend deviates
    report = read_report(report_dir)
    names = [b["name"] for b in report["backends"]]
    assert names == ["onnxruntime-portable", "onnxruntime-portable:twin.onnx", "onnxruntime-portable:wrong.onnx"]
    assert report["reference"] == "onnxruntime-portable"
    reference, twin, wrong = report["backends"]

    for entry in report["backends"]:
        assert set(entry["latency"]) == {"1", "3"}
        for batch, lat in entry["latency"].items():
            assert lat["iterations"] == 6 and all(len(v) == 6 for v in lat["samples_ms"].values())
            for stage, s in lat["stages"].items():
                assert 0 <= s["min"] <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"], (entry["name"], stage)
            samples = lat["samples_ms"]
            # total is the sum of the three stages, iteration by iteration
            np.testing.assert_allclose(
                samples["total"], np.add(np.add(samples["pre"], samples["infer"]), samples["post"]), atol=3e-4
            )
            assert lat["throughput_images_per_s"] == pytest.approx(int(batch) * 1000 / lat["stages"]["total"]["mean"])

    # The same file twice: no difference at all. The other model: its real difference, recomputed here.
    assert twin["deviation"]["map_max_abs"] == 0 and twin["deviation"]["ok"] and twin["deviation"]["status"] == "ok"
    frames, _ = load_frames(BenchConfig(models=[], report_dir=tmp_path, max_images=4))
    with load_backend(models["good"]) as a, load_backend(models["wrong"]) as b:
        inputs = np.stack([model_input(f, full_frame(f), (a.info.height, a.info.width)) for f in frames])
        (map_a, score_a), (map_b, score_b) = a.infer(inputs), b.infer(inputs)
    expected = float(np.abs(map_b.astype(np.float64) - map_a).max())
    assert wrong["deviation"]["map_max_abs"] == pytest.approx(expected, rel=1e-6)
    assert wrong["deviation"]["map_max_rel"] == pytest.approx(expected / np.abs(map_a).max(), rel=1e-6)
    assert wrong["deviation"]["score_max_abs"] == pytest.approx(
        float(np.abs(score_b.astype(np.float64) - score_a).max()), rel=1e-6
    )
    assert wrong["deviation"]["map_max_rel"] > MODEL_TOL_FP32 and not wrong["deviation"]["ok"]
    assert wrong["deviation"]["status"].startswith("DEVIATES")

    text = (report_dir / "report.md").read_text()
    wrong_row = next(line for line in text.splitlines() if line.startswith("| onnxruntime-portable:wrong.onnx |"))
    assert "DEVIATES" in wrong_row  # next to its speed, in the latency table
    assert "## Environment" in text and "## Deviation from the reference" in text
    for name in ("latency_distribution.png", "stage_breakdown.png"):
        image = cv2.imread(str(report_dir / name))
        assert image is not None and image.shape[0] > 100 and image.shape[1] > 100
    assert reference["is_reference"] and not wrong["is_reference"]


def test_bench_of_onnx_files_never_imports_torch(models, tmp_path):
    """Not even to profile them (--profile: onnxruntime's profiler; tests/runtime/test_bench_profile.py)."""
    args = ["bench", "--model", str(models["good"]), "--report", str(tmp_path / "r"), "--profile", *FAST]
    code = (
        "import sys\nfrom mmad.runtime.cli import main\n"
        f"rc = main({args!r})\n"
        "assert 'torch' not in sys.modules, 'mmad bench imported torch for ONNX files'\n"
        "sys.exit(rc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ENV, check=False
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "r" / "report.md").is_file()
    assert all("ops" in b["profile"] for b in read_report(tmp_path / "r")["backends"])


def test_bad_input_is_a_clear_error(models, tmp_path, capsys):
    assert mmad(["bench", "--model", str(tmp_path / "missing.onnx"), "--report", str(tmp_path / "r")]) == 2
    assert "missing.onnx: no such file" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    args = [
        "bench",
        "--model",
        str(models["good"]),
        "--report",
        str(tmp_path / "r"),
        "--images",
        str(tmp_path / "empty"),
    ]
    assert mmad(args) == 2
    assert "no images" in capsys.readouterr().err
    assert mmad(["bench", "--model", str(models["good"]), "--report", str(tmp_path / "r"), "--backends", "magic"]) == 2
    assert "--backends 'magic'" in capsys.readouterr().err


# --- A checkpoint: PyTorch eager is the reference --------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint, generated_dataset) -> tuple[Path, Path]:
    """The session's tiny checkpoint (with thresholds) and the generated dataset's root: (checkpoint, data root)."""
    return tiny_checkpoint, generated_dataset


def test_torch_backend_is_the_training_forward(checkpoint):
    import torch

    from mmad.training.checkpoint import load_model
    from mmad.training.data import ImageTransform
    from mmad.training.inference import TorchBackend

    folder, _ = checkpoint
    backend = TorchBackend(folder, threads=1)
    model, info = load_model(folder)
    images = np.random.default_rng(0).integers(0, 256, (2, backend.image_size, backend.image_size, 3), dtype=np.uint8)
    maps, scores = backend.infer(images)
    transform = ImageTransform.from_model_config(model.cfg)
    with torch.no_grad():
        out = model(torch.stack([transform.normalize(im) for im in images]))
    np.testing.assert_allclose(maps, out.anomaly_map[:, 0].numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(scores, out.score.numpy(), rtol=0, atol=1e-6)
    assert (
        maps.shape == (2, backend.image_size, backend.image_size)
        and backend.threshold == info.thresholds[THRESHOLD_NORMAL]
    )
    with pytest.raises(ValueError, match="expected uint8 images"):
        backend.infer(images.astype(np.float32))


def test_checkpoint_bench_exports_and_compares_with_pytorch(checkpoint, tmp_path):
    folder, data = checkpoint
    report_dir = tmp_path / "report"
    args = ["bench", "--model", str(folder), "--report", str(report_dir), "--images", str(data), *FAST]
    assert mmad([*args, "--backends", "pytorch,onnxruntime-portable,tensorrt"]) == 0
    report = read_report(report_dir)
    assert [b["name"] for b in report["backends"]] == ["pytorch", "onnxruntime-portable"]
    assert report["reference"] == "pytorch" and report["threshold"]["source"] == "model metadata"
    portable = report["backends"][1]
    # The portable graph against PyTorch eager at the whole-model FP32 tolerance (export/verify.py's).
    assert portable["deviation"]["map_max_rel"] <= MODEL_TOL_FP32 and portable["deviation"]["ok"]
    # No verdict-agreement check here: the tiny random model's scores all sit near its threshold, so
    # deviations well inside the FP32 tolerance (asserted above) can flip a verdict.
    assert (report_dir / "models" / "model_portable.onnx").is_file()
    assert not (report_dir / "models" / "model_custom_op.onnx").exists()  # not asked for: not exported
    skipped = {s["name"] for s in report["skipped"]}
    assert {"onnxruntime-custom-op"}.isdisjoint(skipped)
    if shutil.which("nvidia-smi") is None:
        assert {"tensorrt-fp32", "tensorrt-fp16", "tensorrt-int8"} <= skipped
    assert "× reference" in (report_dir / "report.md").read_text()

    # The exported graph given as a file beside the checkpoint is used as it is, not exported again.
    again = tmp_path / "again"
    files = ["--model", str(folder), str(report_dir / "models" / "model_portable.onnx")]
    assert mmad(["bench", *files, "--report", str(again), "--backends", "pytorch,onnxruntime-portable", *FAST]) == 0
    assert [b["name"] for b in read_report(again)["backends"]] == ["pytorch", "onnxruntime-portable"]
    assert not (again / "models").exists()


def test_a_backend_whose_export_fails_is_listed_and_the_rest_still_runs(checkpoint, tmp_path, monkeypatch):
    from mmad.export import onnx_export
    from mmad.export.onnx_graph import ExportError

    def refuse(checkpoint, out, portable=False, **kwargs):
        raise ExportError(f"{out}: refused for the test")

    monkeypatch.setattr(onnx_export, "build_onnx", refuse)
    folder, _ = checkpoint
    report_dir = tmp_path / "report"
    args = ["bench", "--model", str(folder), "--report", str(report_dir), "--backends", "pytorch,onnxruntime", *FAST]
    assert mmad(args) == 0
    report = read_report(report_dir)
    assert [b["name"] for b in report["backends"]] == ["pytorch"]
    reasons = {s["name"]: s["reason"] for s in report["skipped"]}
    assert (
        "refused for the test" in reasons["onnxruntime-portable"]
        and "refused for the test" in reasons["onnxruntime-custom-op"]
    )
    assert "refused for the test" in (report_dir / "report.md").read_text()


@pytest.mark.gpu
def test_tensorrt_engines_next_to_pytorch(checkpoint, tmp_path):
    """On a GPU with TensorRT and the plugin: FP32 and FP16 engines exported, timed and checked."""
    import importlib.util

    plugin = os.environ.get(PLUGIN_ENV)
    if importlib.util.find_spec("tensorrt") is None or shutil.which("nvidia-smi") is None or not plugin:
        pytest.skip("needs TensorRT, an NVIDIA GPU and $MMAD_TRT_PLUGIN (libmmad_trt_plugins.so)")
    folder, data = checkpoint
    report_dir = tmp_path / "report"
    args = [
        "bench",
        "--model",
        str(folder),
        "--report",
        str(report_dir),
        "--images",
        str(data),
        "--batch",
        "1,2",
        *FAST,
    ]
    assert mmad([*args, "--backends", "pytorch,tensorrt-fp32,tensorrt-fp16"]) == 0
    report = read_report(report_dir)
    entries = {b["name"]: b for b in report["backends"]}
    assert set(entries) == {"pytorch", "tensorrt-fp32", "tensorrt-fp16"}, report["skipped"]
    assert entries["tensorrt-fp32"]["deviation"]["ok"] and entries["tensorrt-fp32"]["deviation"]["tolerance"] == 1e-3
    assert entries["tensorrt-fp16"]["precision"] == "fp16" and set(entries["tensorrt-fp16"]["latency"]) == {"1", "2"}
