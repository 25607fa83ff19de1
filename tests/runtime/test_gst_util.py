"""Starting GStreamer from the virtual environment: the plugin scanner finds the Gst overrides."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mmad.runtime.gst_util import gst_unavailable_reason, python_has_gst_overrides, system_gst_overrides


@pytest.mark.skipif(gst_unavailable_reason() is not None, reason=str(gst_unavailable_reason()))
@pytest.mark.skipif(python_has_gst_overrides() or system_gst_overrides() is None, reason="no shim needed here")
def test_plugin_scanner_of_a_fresh_registry_prints_no_gst_is_no_dict(tmp_path):
    """gst-python's loader, run by gst-plugin-scanner in this venv's Python, used to print
    "gi.repository.Gst is no dict" (the pip PyGObject has no Gst overrides) on a fresh registry."""
    env = {**os.environ, "GST_REGISTRY": str(tmp_path / "registry.bin")}
    env.pop("PYTHONPATH", None)
    code = "from mmad.runtime.gst_util import import_gst; import_gst()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "is no dict" not in done.stderr and (tmp_path / "registry.bin").is_file()


@pytest.mark.skipif(gst_unavailable_reason() is not None, reason=str(gst_unavailable_reason()))
@pytest.mark.skipif(python_has_gst_overrides() or system_gst_overrides() is None, reason="no shim needed here")
def test_gstreamer_starts_when_the_overrides_shim_cannot_be_written(tmp_path):
    """The shim lives in the user's cache folder; one that cannot be written leaves GStreamer working (a
    file in its place: refused even to root, as a read-only home refuses a user)."""
    cache = tmp_path / "cache"
    cache.write_text("not a folder")
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "GST_REGISTRY": str(tmp_path / "registry.bin")}
    env.pop("PYTHONPATH", None)  # this process's import_gst put the shim there: the child must need its own
    code = "from mmad.runtime.gst_util import import_gst; print(import_gst().version_string())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0 and "GStreamer" in done.stdout, done.stderr
