"""The SelectiveScan TensorRT plugin library: which one may be loaded, and loading it into TensorRT.

One home for what the exporter (mmad.export.trt_engine, building an engine) and the TensorRT
backend (mmad.runtime.backends.tensorrt, running one) both need. Torch-free; `tensorrt` is imported
only inside import_tensorrt(), so this module imports on any machine.

    import_tensorrt()             the tensorrt module, or a ConfigError that says what to install
    tensorrt_major(trt)           10 for TensorRT 10.3.0.26
    plugin_tensorrt_major(path)   the TensorRT major a plugin library was compiled for (None: unknown)
    resolve_plugin_library(...)   which library to load (the rule below), or None
    load_plugin_library(trt, p)   check it is for this TensorRT, then register its creators, once per process

Which library is loaded (loading a library runs its code, so only one the user chose to trust):
  1. --plugin-library, else $MMAD_TRT_PLUGIN: named by the user, trusted as named (a missing file is an error);
  2. the engine sidecar's plugin_library, only if it resolves (links followed) inside the engine's folder or
     the installed plugin folder (contract.PLUGIN_INSTALL_DIR) AND its sha256 equals the sidecar's
     plugin_sha256; a library that is not there (an engine moved between a host and a container) falls
     through to 3, one that is there but fails the check is refused with how to trust it explicitly;
  3. the installed default, contract.PLUGIN_INSTALL_DIR / contract.PLUGIN_LIBRARY_NAME, when present.

Engines never carry the library (no `setPluginsToSerialize`, and TensorRT's runtime keeps its default of
refusing engine host code): the library is always loaded from outside, before deserialising, by this rule.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from mmad.runtime import contract
from mmad.runtime.contract import PLUGIN_ENV, EngineSidecar, file_sha256
from mmad.runtime.errors import ConfigError

log = logging.getLogger(__name__)

BUILD_HINT = "build it: cmake -S plugins -B plugins/build && cmake --build plugins/build"
SCAN_CREATOR = (contract.SCAN_PLUGIN_NAME, contract.SCAN_PLUGIN_VERSION, contract.SCAN_PLUGIN_NAMESPACE)

# Libraries this process has registered with TensorRT, by resolved path. TensorRT's loadLibrary
# refuses a library whose creators are already registered, so a second engine built or run in one
# process must not load the same library again.
_LOADED: dict[Path, object] = {}


def import_tensorrt():
    """The tensorrt module; ConfigError with the install hints when its Python bindings are missing."""
    try:
        import tensorrt
    except ImportError as err:
        raise ConfigError(
            f"TensorRT not available ({err}): engines need the tensorrt Python package and an NVIDIA GPU "
            "(JetPack: apt install python3-libnvinfer; PC: pip install tensorrt). The ONNX export and the "
            "onnxruntime backend (an .onnx model) need neither."
        ) from None
    return tensorrt


def tensorrt_major(trt) -> int:
    """The major version of a tensorrt module: 10 for "10.3.0.26"."""
    return int(str(trt.__version__).split(".")[0])


def plugin_tensorrt_major(path: Path) -> int | None:
    """The TensorRT major the plugin library was compiled for: it names libnvinfer.so.<major> (the
    registry it registers with), which is in its read-only data. None when it does not say."""
    found = set(re.findall(rb"libnvinfer\.so\.(\d+)", Path(path).read_bytes()))
    return int(found.pop()) if len(found) == 1 else None


# --- Which library ----------------------------------------------------------------------------------------
def _trust_hint(path: Path) -> str:
    return f"to trust it, name it yourself: --plugin-library {path} (or {PLUGIN_ENV}={path})"


def _user_named(explicit: str | Path | None) -> Path | None:
    """--plugin-library, else $MMAD_TRT_PLUGIN; ConfigError naming the option when the file is missing."""
    for source, candidate in (("--plugin-library", explicit), (f"${PLUGIN_ENV}", os.environ.get(PLUGIN_ENV))):
        if candidate:
            path = Path(candidate)
            if not path.is_file():
                raise ConfigError(f"{source} {path}: no such file ({BUILD_HINT})")
            return path
    return None


def check_sidecar_library(path: Path, sidecar: EngineSidecar) -> Path:
    """The sidecar's library, links resolved (what is loaded is the file that was checked); ConfigError unless it
    is inside the engine's folder or the installed plugin folder and has the sha256 the sidecar records (the one
    the engine was built with)."""
    real = path.resolve()
    folders = [sidecar.path.parent.resolve() if sidecar.path else Path.cwd(), contract.PLUGIN_INSTALL_DIR.resolve()]
    where = f"{sidecar.path}: plugin_library {sidecar.plugin_library!r}"
    if not any(real.is_relative_to(folder) for folder in folders):
        raise ConfigError(
            f"{where} resolves to {real}, outside the engine's folder and the installed plugin folder "
            f"({contract.PLUGIN_INSTALL_DIR}); not loaded, {_trust_hint(real)}"
        )
    if not sidecar.plugin_sha256:
        raise ConfigError(
            f"{where}: the sidecar records no plugin_sha256 to check it against; not loaded, {_trust_hint(real)}"
        )
    if file_sha256(real) != sidecar.plugin_sha256:
        raise ConfigError(
            f"{where}: {real} is not the library the engine was built with (its sha256 differs from the "
            f"sidecar's plugin_sha256); not loaded. Rebuild the engine with it (mmad export trt), or "
            f"{_trust_hint(real)}"
        )
    return real


def resolve_plugin_library(explicit: str | Path | None, sidecar: EngineSidecar | None = None) -> Path | None:
    """The plugin library to load by the rule of the module docstring; None when there is none.

    ConfigError when a library the user named is missing, or the sidecar's fails the trust check.
    """
    named = _user_named(explicit)
    if named is not None:
        return named
    if sidecar is not None and sidecar.plugin_library:
        path = sidecar.plugin_path()
        if path.is_file():
            return check_sidecar_library(path, sidecar)
        log.warning(
            "%s: plugin_library %s is not there (built on another machine?); trying the installed default",
            sidecar.path,
            path,
        )
    default = contract.PLUGIN_INSTALL_DIR / contract.PLUGIN_LIBRARY_NAME
    return default if default.is_file() else None


# --- Loading ------------------------------------------------------------------------------------------------
def registered_scan_creator(trt):
    """The SelectiveScan creator TensorRT has registered (name, version, namespace of the contract), or None.
    IPluginRegistry.get_creator (TensorRT 10+) finds IPluginV3 creators; get_plugin_creator does not."""
    return trt.get_plugin_registry().get_creator(*SCAN_CREATOR)


def load_plugin_library(trt, path: Path):
    """Register the library's plugin creators with TensorRT, before an engine that uses them is built or
    deserialised; returns TensorRT's handle (None when the creator was registered already). Once per
    library and process (see _LOADED); not at all when the SelectiveScan creator is registered already
    (TensorRT's loadLibrary would refuse the library then).

    ConfigError when the library was built for another TensorRT major, or TensorRT refuses it.
    """
    path = Path(path)
    key = path.resolve()
    if key in _LOADED:
        return _LOADED[key]
    built_for = plugin_tensorrt_major(path)
    if built_for is not None and built_for != tensorrt_major(trt):
        raise ConfigError(
            f"TensorRT plugin library {path}: built for TensorRT {built_for}, this is TensorRT {trt.__version__}; "
            "rebuild it against this TensorRT's headers"
        )
    if registered_scan_creator(trt) is not None:
        others = ", ".join(str(p) for p in _LOADED) or "registered on load (MMAD_TRT_REGISTER_ON_LOAD=1)"
        log.info("SelectiveScan plugin already registered (%s); %s not loaded again", others, path)
        _LOADED[key] = None
        return None
    try:
        handle = trt.get_plugin_registry().load_library(str(path))
    except (RuntimeError, TypeError) as err:  # what TensorRT's binding raises
        raise ConfigError(
            f"TensorRT plugin library {path}: TensorRT cannot load it ({err}); is it built for "
            f"TensorRT {trt.__version__}?"
        ) from None
    if handle is None and registered_scan_creator(trt) is None:
        raise ConfigError(
            f"TensorRT plugin library {path}: TensorRT refused the library and registered no SelectiveScan "
            f"creator (see its log above); is it the SelectiveScan plugin library, built for TensorRT "
            f"{trt.__version__}?"
        )
    _LOADED[key] = handle  # None: the library registered its creator as it was opened (MMAD_TRT_REGISTER_ON_LOAD)
    return handle
