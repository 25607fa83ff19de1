"""The TensorRT plugin library, built against TensorRT's public headers and checked without TensorRT's runtime:
mmad_plugin_probe loads it as TensorRT's loadLibrary does (dlopen, setLoggerFinder, getCreators) and drives
the creator and the plugin through their interfaces.

Header sets: MMAD_TENSORRT_ROOTS (folders with include/NvInferRuntime.h, separated by os.pathsep), else
TensorRT_ROOT, else a system TensorRT. Without any, those tests skip; the CMake build then says the plugin was
skipped, which is tested everywhere.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mmad.plugins.selective_scan import build as scan_build
from mmad.runtime import contract

SYSTEM_HEADERS = (Path("/usr/include/x86_64-linux-gnu"), Path("/usr/include/aarch64-linux-gnu"), Path("/usr/include"))


def _header_roots() -> list[Path | None]:
    """TensorRT roots to build against; None stands for CMake's search of the system paths."""
    listed = os.environ.get("MMAD_TENSORRT_ROOTS") or os.environ.get("TensorRT_ROOT")
    if listed:
        return [Path(p) for p in listed.split(os.pathsep) if p]
    if any((d / "NvInferRuntime.h").is_file() for d in SYSTEM_HEADERS):
        return [None]
    return []


ROOTS = _header_roots()


def _trt_version(root: Path | None) -> str:
    folders = [root / "include"] if root else list(SYSTEM_HEADERS)
    for folder in folders:
        header = folder / "NvInferVersion.h"
        if header.is_file():
            text = header.read_text()
            parts = [
                re.search(rf"#define (?:NV_TENSORRT|TRT)_{p}(?:_ENTERPRISE)? +(\d+)", text) for p in ("MAJOR", "MINOR")
            ]
            return ".".join(m.group(1) for m in parts if m)
    return "?"


@pytest.fixture(
    scope="module",
    params=ROOTS
    or [
        pytest.param(
            None, marks=pytest.mark.skip(reason="no TensorRT headers: set MMAD_TENSORRT_ROOTS or TensorRT_ROOT")
        )
    ],
    ids=lambda r: f"trt{_trt_version(r)}",
)
def plugin_build(request, tmp_path_factory) -> Path:
    missing = scan_build.tools_available()
    if missing:
        pytest.skip(f"cannot build the plugin: {missing}")
    cfg = scan_build.BuildConfig(
        tmp_path_factory.mktemp("trt-plugin"),
        cuda_archs="87",
        trt_plugin="ON",
        tensorrt_root=request.param,
        targets=(scan_build.TRT_LIBRARY, scan_build.PROBE, scan_build.FAKE_NVINFER),
        jobs=2,
    )
    out, seconds = scan_build.build(cfg)
    print(f"plugin built against TensorRT {_trt_version(request.param)} headers in {seconds:.1f} s")
    return out


def _run_probe(build: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    lib = scan_build.library_file(build, scan_build.TRT_LIBRARY)
    return subprocess.run(
        [str(build / scan_build.PROBE), str(lib), *extra], capture_output=True, text=True, env=env, check=False
    )


def test_probe_drives_creator_and_plugin(plugin_build):
    proc = _run_probe(plugin_build)
    failures = [line for line in proc.stdout.splitlines() if line.startswith("FAIL")]
    assert proc.returncode == 0 and not failures, proc.stdout + proc.stderr
    ident = re.search(r"name=(\S+) version=(\S+) namespace=(\S+) fields=(\S*)", proc.stdout)
    assert ident, proc.stdout
    assert ident.group(1) == contract.SCAN_PLUGIN_NAME
    assert ident.group(2) == contract.SCAN_PLUGIN_VERSION
    assert ident.group(3) == contract.SCAN_PLUGIN_NAMESPACE
    assert ident.group(4) == f"{contract.SCAN_ATTR_SOFTPLUS}:5"  # PluginFieldType::kINT32
    assert proc.stdout.count("\nok ") >= 30
    # Issue 10.8: the multiprocessor count is the device's or nothing (never a made-up 1), and a launch that fails
    # is an execution failure (kFAILED_EXECUTION), not a bad argument.
    if int(re.search(r"devices=(\d+)", proc.stdout).group(1)) == 0:
        assert "ok no device: nothing serialised, error logged" in proc.stdout
        assert "ok no device: configurePlugin refused, error logged" in proc.stdout
        assert "ok a failed launch reports an execution failure" in proc.stdout
    else:
        assert "ok the device's multiprocessor count serialised" in proc.stdout


def test_registration_on_load_for_plain_dlopen(plugin_build):
    """MMAD_TRT_REGISTER_ON_LOAD=1: loading the library registers its creator with libnvinfer's registry (here
    the recording stand-in of plugins/selective_scan/native/tensorrt/testing/fake_nvinfer.cpp), as Polygraphy needs."""
    fakes = list((plugin_build / "testing").glob("libnvinfer.so.*"))
    assert len(fakes) == 1, fakes
    env = {**os.environ, "LD_LIBRARY_PATH": str(fakes[0].parent), "MMAD_TRT_REGISTER_ON_LOAD": "1"}
    proc = _run_probe(plugin_build, "--expect-registered", env=env)
    assert proc.returncode == 0 and "ok creator registered on load" in proc.stdout, proc.stdout + proc.stderr
    # Without the variable nothing registers: TensorRT's loadLibrary would refuse a pre-registered creator.
    env.pop("MMAD_TRT_REGISTER_ON_LOAD")
    proc = _run_probe(plugin_build, "--expect-registered", env=env)
    assert "FAIL creator registered on load" in proc.stdout


def test_library_exports_only_the_entry_points(plugin_build):
    lib = scan_build.library_file(plugin_build, scan_build.TRT_LIBRARY)
    handle = ctypes.CDLL(str(lib))  # loads with no TensorRT library present
    assert handle.getCreators and handle.setLoggerFinder
    if shutil.which("nm") is None:
        pytest.skip("nm not found")
    out = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True)
    exported = {line.split()[-1] for line in out.stdout.splitlines() if line.split()[-2:-1] == ["T"]}
    assert {"getCreators", "setLoggerFinder"} <= exported
    ours = {name for name in exported if not name.startswith(("_", "cuda", "__cuda"))}
    assert ours == {"getCreators", "setLoggerFinder"}, ours


def test_cmake_says_plainly_when_the_plugin_is_skipped(tmp_path):
    missing = scan_build.tools_available()
    if missing:
        pytest.skip(missing)
    proc = subprocess.run(
        [
            "cmake",
            "-S",
            str(scan_build.PLUGINS_DIR),
            "-B",
            str(tmp_path),
            "-DCMAKE_CUDA_ARCHITECTURES=87",
            f"-DTensorRT_ROOT={tmp_path / 'no-tensorrt'}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "SelectiveScan TensorRT plugin is SKIPPED" in proc.stdout + proc.stderr
    assert "mmad_trt_plugins" not in (tmp_path / "Makefile").read_text()
