"""GStreamer access: importing Gst through PyGObject, element look-ups, the `mmadinfer` plugin path.

PyGObject from pip (in a virtual environment) has no GStreamer overrides; Debian and JetPack ship
them in python3-gst-1.0 under the system's dist-packages. The stream does not need them, but
gst-python's plugin loader (which runs `mmadinfer`) refuses to start without them, so
`plugin_environment` points a venv's PyGObject at the system's overrides.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import ConfigError

PLUGIN_DIR = Path(__file__).resolve().parent / "gst_plugin"  # GST_PLUGIN_PATH: holds python/mmadinfer.py
SYSTEM_OVERRIDE_DIRS = (  # where Debian / Ubuntu (JetPack) put python3-gst-1.0's gi overrides
    Path("/usr/lib/python3/dist-packages/gi/overrides"),
    Path(f"/usr/lib/python{sys.version_info.major}.{sys.version_info.minor}/dist-packages/gi/overrides"),
)

_GST = None


def import_gst():
    """Gst, initialised; ConfigError saying what to install when PyGObject or GStreamer is missing."""
    global _GST
    if _GST is not None:
        return _GST
    _load_onnxruntime_first()
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstApp", "1.0")
        from gi.repository import Gst, GstApp  # noqa: F401  -- GstApp gives appsink/appsrc their methods
    except (ImportError, ValueError) as err:
        raise ConfigError(
            f"GStreamer from Python is not available ({err}); install GStreamer with its introspection data "
            "(Debian: gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0) and PyGObject (pip install 'mmad-edge[gst]')"
        ) from None
    _give_the_plugin_scanner_gst_overrides()
    Gst.init(None)
    _GST = Gst
    return Gst


def _give_the_plugin_scanner_gst_overrides() -> None:
    """Gst.init may start gst-plugin-scanner, which loads gst-python's loader into this venv's Python;
    without the Gst overrides there, the loader prints "gi.repository.Gst is no dict" and the registry caches
    the failure. The shim on PYTHONPATH reaches only child processes: this one has imported gi already.
    The shim only silences that warning, so a cache folder that cannot be written (read-only home) must not
    stop GStreamer from starting."""
    try:
        shim_path = plugin_environment().get("PYTHONPATH")
    except OSError:
        return
    if shim_path:
        os.environ["PYTHONPATH"] = shim_path


def _load_onnxruntime_first() -> None:
    """Import onnxruntime (when installed) before GStreamer enters the process.

    libgstreamer links libunwind, whose _Unwind_* symbols can take the place of libgcc's for a C++
    library loaded after it: onnxruntime loaded after Gst.init crashes (SIGSEGV / SIGABRT) instead of
    raising its exception for a bad model. Loaded first, it keeps libgcc's unwinder.
    """
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        pass


def gst_unavailable_reason() -> str | None:
    """None when GStreamer works from Python here, else why not (for test skips and --help)."""
    try:
        import_gst()
    except ConfigError as err:
        return str(err)
    return None


def have_element(name: str) -> bool:
    """Whether a GStreamer element factory of this name is installed."""
    return import_gst().ElementFactory.find(name) is not None


def element_has_property(name: str, prop: str) -> bool:
    """Whether the element factory `name` exists and its elements have the property `prop` (versions differ)."""
    element = import_gst().ElementFactory.make(name)
    return element is not None and element.find_property(prop) is not None


def missing_elements(names: list[str]) -> list[str]:
    return [n for n in names if not have_element(n)]


def system_gst_overrides() -> Path | None:
    """The system's gi overrides folder with Gst.py (python3-gst-1.0), or None."""
    for d in SYSTEM_OVERRIDE_DIRS:
        if (d / "Gst.py").is_file():
            return d
    return None


def python_has_gst_overrides() -> bool:
    """Whether this interpreter's PyGObject finds Gst overrides by itself."""
    try:
        import gi.overrides
    except ImportError:
        return False
    return any((Path(p) / "Gst.py").is_file() for p in gi.overrides.__path__)


def plugin_environment(shim_dir: str | Path | None = None) -> dict[str, str]:
    """Environment variables that let gst-launch-1.0 (and any GStreamer app) load `mmadinfer`.

    GST_PLUGIN_PATH gets the plugin folder. When this interpreter's PyGObject lacks the Gst overrides
    but the system has them, a folder `shim_dir/gi/overrides` (a link to the system's) goes on
    PYTHONPATH: PyGObject extends its overrides path with every `gi/overrides` on sys.path; and
    GST_REGISTRY points at a plugin registry of its own in that folder.
    Run from the virtual environment (its bin/ first on PATH) so the loader embeds its Python.
    """
    env = {"GST_PLUGIN_PATH": os.pathsep.join(filter(None, [str(PLUGIN_DIR), os.environ.get("GST_PLUGIN_PATH")]))}
    system = system_gst_overrides()
    if not python_has_gst_overrides() and system is not None:
        shim = (
            Path(shim_dir)
            if shim_dir
            else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mmad" / "gi-shim"
        )
        link = shim / "gi" / "overrides"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(system, target_is_directory=True)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")]))
        # A registry of its own: the default one may have blacklisted the Python loader when some
        # process without the shim rescanned the plugins.
        env["GST_REGISTRY"] = str(shim / f"registry-{os.uname().machine}.bin")
    return env


def main() -> None:
    """`python -m mmad.runtime.gst_util`: print shell exports for using `mmadinfer` in gst-launch-1.0."""
    for key, value in plugin_environment().items():
        print(f"export {key}={value}")


if __name__ == "__main__":
    main()
