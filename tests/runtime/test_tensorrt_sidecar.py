"""The engine sidecar's reader (mmad.runtime.contract.read_sidecar) refuses a mistyped field with a message naming
the file and the field (issue 13 item 11), one row per field; what the exporter writes reads back unchanged."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mmad.runtime import contract
from mmad.runtime.errors import ConfigError

GOOD = {
    "tensorrt_version": "10.3.0.30",
    "gpu": "Orin",
    "compute_capability": "8.7",
    "hardware_compatibility": "none",
    "precision": "fp16",
    "strongly_typed": False,
    "plugin_library": "libmmad_trt_plugins.so",
    "plugin_sha256": "ab" * 32,
    "onnx": "model.onnx",
    "onnx_sha256": "cd" * 32,
    "input": {"name": "image"},
    "threshold": 0.5,
    "metadata": {"mmad.image_size": "256"},
}


def _write(tmp_path, obj):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"")
    contract.sidecar_path(engine).write_text(json.dumps(obj))
    return engine


def test_what_the_writer_writes_reads_back(tmp_path):
    engine = _write(tmp_path, GOOD)
    read = contract.read_sidecar(engine)
    assert (read.tensorrt_version, read.strongly_typed, read.threshold) == ("10.3.0.30", False, 0.5)
    assert read.plugin_sha256 == "ab" * 32 and read.metadata == {"image_size": "256"}
    nulls = contract.read_sidecar(_write(tmp_path, {k: None for k in GOOD if k != "metadata"}))
    assert nulls.plugin_library is None and nulls.hardware_compatibility == "none" and nulls.input == {}


@pytest.mark.parametrize(
    "field,value,expected",
    [
        ("tensorrt_version", 10.3, "a string"),
        ("gpu", ["Orin"], "a string"),
        ("compute_capability", 8.7, "a string"),
        ("precision", 16, "a string"),
        ("plugin_library", {"path": "/tmp/x.so"}, "a string"),
        ("plugin_library", 5, "a string"),
        ("plugin_sha256", "abc", "a sha256"),
        ("plugin_sha256", 12345, "a sha256"),
        ("onnx", True, "a string"),
        ("hardware_compatibility", "any", "one of none, ampere\\+, same_compute_capability"),
        ("strongly_typed", "yes", "true or false"),
        ("input", [1, 256, 256, 3], "a JSON object"),
        ("threshold", "0.5", "a finite number"),
        ("threshold", True, "a finite number"),
        ("threshold", float("nan"), "a finite number"),
    ],
)
def test_a_mistyped_field_is_named(tmp_path, field, value, expected):
    engine = _write(tmp_path, {**GOOD, field: value})
    with pytest.raises(ConfigError, match=rf"m\.engine\.json: engine sidecar field '{field}' must be {expected}"):
        contract.read_sidecar(engine)


def test_the_readme_sidecar_example_reads_and_names_the_plugin_library(tmp_path):
    """Issue 10 item 8: the README's sidecar example is one the reader accepts, and names the TensorRT plugin library
    (libmmad_trt_plugins.so), not the kernel-only ctypes library (libmmad_selective_scan.so)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = re.findall(r"```json\n(.*?)```", readme, flags=re.DOTALL)
    examples = [block for block in blocks if "plugin_library" in block]
    assert examples, "README.md has no engine sidecar example (a ```json block with plugin_library)"
    for block in examples:
        obj = json.loads(re.sub(r'"<[^>]*>"', '"' + "ab" * 32 + '"', block))  # placeholders stand for sha256 digests
        read = contract.read_sidecar(_write(tmp_path, obj))
        assert read.plugin_library == contract.PLUGIN_LIBRARY_NAME
