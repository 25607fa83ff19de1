"""The SelectiveScan TensorRT plugin library: which one, and loading it into TensorRT.

One home for what the exporter (mmad.export.trt_engine, building an engine) and the TensorRT
backend (mmad.runtime.backends.tensorrt, running one) both need. Torch-free; `tensorrt` is imported
only inside import_tensorrt(), so this module imports on any machine.

    import_tensorrt()             the tensorrt module, or a ConfigError that says what to install
    tensorrt_major(trt)           10 for TensorRT 10.3.0.26
    plugin_tensorrt_major(path)   the TensorRT major a plugin library was compiled for (None: unknown)
    resolve_plugin_library(...)   --plugin-library, else the engine sidecar's, else $MMAD_TRT_PLUGIN
    load_plugin_library(trt, p)   check it is for this TensorRT, then register its creators
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mmad.runtime.contract import PLUGIN_ENV, EngineSidecar
from mmad.runtime.errors import ConfigError

BUILD_HINT = "build it: cmake -S plugins -B plugins/build && cmake --build plugins/build"

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


def resolve_plugin_library(explicit: str | Path | None, sidecar: EngineSidecar | None = None) -> Path | None:
    """The plugin library to load: `explicit` (--plugin-library), else the one the engine's sidecar
    names (when a sidecar is given), else $MMAD_TRT_PLUGIN; None when none is named.

    ConfigError naming where the path came from when that file does not exist.
    """
    candidates: list[tuple[str, str | Path | None]] = [("--plugin-library", explicit)]
    if sidecar is not None:
        where = sidecar.path.name if sidecar.path is not None else "the engine's sidecar"
        candidates.append((f"{where}'s plugin_library", sidecar.plugin_path()))
    candidates.append((f"${PLUGIN_ENV}", os.environ.get(PLUGIN_ENV)))
    for source, candidate in candidates:
        if candidate:
            path = Path(candidate)
            if not path.is_file():
                raise ConfigError(f"{source} {path}: no such file ({BUILD_HINT})")
            return path
    return None


def load_plugin_library(trt, path: Path):
    """Register the library's plugin creators with TensorRT, before an engine that uses them is built
    or deserialised; returns TensorRT's handle. Once per library and process (see _LOADED).

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
    try:
        handle = trt.get_plugin_registry().load_library(str(path))
    except (RuntimeError, TypeError) as err:  # what TensorRT's binding raises
        raise ConfigError(
            f"TensorRT plugin library {path}: TensorRT cannot load it ({err}); is it built for "
            f"TensorRT {trt.__version__}?"
        ) from None
    if handle is None:
        raise ConfigError(
            f"TensorRT plugin library {path}: TensorRT refused the library (see its log above); is it built for "
            f"TensorRT {trt.__version__}?"
        )
    _LOADED[key] = handle
    return handle
