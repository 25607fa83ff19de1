"""ONNX -> TensorRT engine with the SelectiveScan plugin, plus the JSON sidecar the runtime reads.

Written against the TensorRT 10.x and 11.x Python API:
  * 10.x (JetPack 6 has 10.3): weakly typed networks; --precision fp16 / int8 set BuilderFlag.FP16 /
    INT8 (INT8 needs a Q/DQ graph: explicit quantisation).
  * 11.x: every network is strongly typed and the precision flags are gone, so the precision comes
    from the ONNX: a float32 graph asked for fp16 is converted here first (mmad.export.precision,
    the scan kept float32), one asked for int8 is quantised here from --calib-data.
Everything that can be checked without TensorRT (the ONNX, its metadata, the precision request,
the plugin file, the batch range) is checked first, so a bad request fails fast anywhere. Finding,
checking and loading the plugin library is mmad.runtime.backends.tensorrt_plugin's, shared with the
runtime's TensorRT backend.

Sidecar (`<engine>.json`): the contract's EngineSidecar (mmad.runtime.contract: one writer, one
reader, the runtime's): TensorRT version, GPU name and compute capability, precision, plugin library
and its sha256, the ONNX and its sha256, input name and shape range, threshold, and the ONNX metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mmad.export.command import PRECISIONS, EngineRequest, ExportError
from mmad.export.onnx_graph import is_qdq, load_onnx, require_metadata, save_onnx, scan_nodes
from mmad.runtime.backends.tensorrt_plugin import (
    import_tensorrt,
    load_plugin_library,
    resolve_plugin_library,
    tensorrt_major,
)
from mmad.runtime.contract import (
    INPUT_DTYPE,
    INPUT_LAYOUT,
    INPUT_NAME,
    OUTPUT_MAP,
    OUTPUT_SCORE,
    PLUGIN_ENV,
    PLUGIN_INSTALL_DIR,
    EngineSidecar,
    file_sha256,
    write_sidecar,
)
from mmad.runtime.errors import ConfigError

TIMING_CACHE_NAME = "tensorrt_timing.cache"  # beside the engine unless --timing-cache names another file


class NoGPU(ExportError):
    """No CUDA GPU is visible (TensorRT builds for the GPU it runs on)."""


class EngineBuildError(RuntimeError):
    """TensorRT refused to parse or build the network; the message carries its log."""


@dataclass
class CheckedRequest:
    """A request that passed the checks, with what they learnt about the ONNX."""

    request: EngineRequest
    metadata: dict[str, str]  # "mmad.*" keys, prefix removed
    onnx_precision: str
    precision: str  # what the engine will be
    custom_op: bool  # the graph holds SelectiveScan nodes: the plugin is needed
    plugin: Path | None
    image_size: int


def onnx_precision(model, metadata: dict[str, str]) -> str:
    """fp32, fp16 or int8: the metadata's word, else what the graph holds (Q/DQ nodes: int8)."""
    if is_qdq(model):
        return "int8"
    return metadata.get("precision", "fp32")


def check_request(request: EngineRequest) -> CheckedRequest:
    """Validate everything that needs no TensorRT; ExportError naming the file or option."""
    model = load_onnx(request.onnx, what="--onnx")
    metadata = require_metadata(model, request.onnx)
    current = onnx_precision(model, metadata)
    wanted = request.precision or current
    if wanted not in PRECISIONS:
        raise ExportError(f"--precision {wanted!r}: expected one of {', '.join(PRECISIONS)}")
    if wanted == "int8" and current != "int8" and not request.calib_data:
        raise ExportError(
            f"--precision int8: {request.onnx} has no Q/DQ nodes and no --calib-data was given; give "
            "--calib-data DIR (normal training images) or an INT8 ONNX "
            "(python export/to_onnx.py --precision int8)"
        )
    if current != "fp32" and wanted != current:
        raise ExportError(
            f"--precision {wanted}: {request.onnx} is a {current} graph; build it as {current} "
            "or export the precision you want from the float32 graph"
        )
    for folder in request.calib_data:
        if not Path(folder).is_dir():
            raise ExportError(f"--calib-data {folder}: no such folder")
    custom_op = bool(scan_nodes(model))
    plugin = resolve_plugin_library(request.plugin_library)  # --plugin-library, $MMAD_TRT_PLUGIN, installed
    if custom_op and plugin is None:
        raise ExportError(
            f"{request.onnx} uses the SelectiveScan op: give its TensorRT plugin with --plugin-library "
            f"libmmad_trt_plugins.so (or ${PLUGIN_ENV}), or build from a portable graph "
            "(to_onnx.py --portable)"
        )
    if request.workspace_mb <= 0:
        raise ExportError(f"--workspace {request.workspace_mb}: expected a positive number of MB")
    size = int(metadata.get("image_size", "0") or 0)
    return CheckedRequest(request, metadata, current, wanted, custom_op, plugin, size)


# --- TensorRT and the GPU ------------------------------------------------------------------------------
def gpu_info() -> tuple[str, str]:
    """(name, compute capability "major.minor") of the current CUDA device, through the runtime backend's
    device memory (Polygraphy's libcudart wrapper, else pycuda); NoGPU when none can be reached."""
    from mmad.runtime.backends.cuda_memory import cuda_memory

    try:
        memory = cuda_memory()
    except ConfigError as err:
        raise NoGPU(f"no CUDA GPU available: TensorRT builds an engine for the GPU it runs on ({err})") from None
    try:
        with memory.current():
            return memory.device_facts()
    finally:
        memory.close()


# --- Preparing the ONNX the build reads -----------------------------------------------------------------
def prepare_onnx(checked: CheckedRequest, strongly_typed: bool, log: Callable[[str], None]) -> Path:
    """The ONNX to parse: the given one, or a converted copy beside the engine when the precision
    must come from the graph (strongly typed) or INT8 must be calibrated first."""
    req = checked.request
    if checked.precision == checked.onnx_precision:
        return req.onnx
    from mmad.export.precision import calibration_images, to_fp16, to_int8

    model = load_onnx(req.onnx)
    if checked.precision == "int8":
        images = calibration_images(req.calib_data, req.calib_images, checked.image_size or 256)
        log(f"quantising {req.onnx.name} to INT8 Q/DQ on {len(images)} images of {', '.join(map(str, req.calib_data))}")
        converted = to_int8(model, images)
    elif checked.precision == "fp16" and strongly_typed:
        log(f"converting {req.onnx.name} to FP16 (strongly typed TensorRT takes the precision from the graph)")
        converted = to_fp16(model)
    else:
        return req.onnx  # fp16 on a weakly typed network: the builder flag does it
    path = req.out.with_name(f"{req.out.stem}.{checked.precision}.onnx")
    save_onnx(converted, path)
    return path


# --- Building --------------------------------------------------------------------------------------------
def _network_flags(trt, strongly_typed: bool) -> int:
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return (1 << int(flag)) if strongly_typed and flag is not None else 0


def timing_cache_path(request: EngineRequest) -> Path:
    """--timing-cache, else tensorrt_timing.cache beside the engine (engines of one device share a folder)."""
    return Path(request.timing_cache) if request.timing_cache else request.out.with_name(TIMING_CACHE_NAME)


def attach_timing_cache(config, path: Path, log: Callable[[str], None]):
    """Give the builder the timing cache in `path` (an empty one when there is none, or TensorRT finds it was
    made for another device or release): kernels timed in an earlier build are not timed again."""
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, False):  # False: refuse a cache made on another device or release
        log(f"timing cache {path} is for another GPU or TensorRT; starting a new one")
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    elif data:
        log(f"timing cache {path}: reusing the kernel timings of earlier builds")
    return cache


def save_timing_cache(config, path: Path) -> None:
    """Write the builder's timing cache (with this build's timings) to `path`, whole or not at all."""
    data = bytes(config.get_timing_cache().serialize())
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def builder_config(trt, builder, checked: CheckedRequest, strongly_typed: bool):
    """The builder configuration: workspace, precision flags (weakly typed networks only), the batch profile.
    Engines never get plugins to serialise (setPluginsToSerialize): the runtime loads the library itself,
    and TensorRT refuses an engine carrying a copy of a library already loaded (tensorrt_plugin's rule)."""
    req = checked.request
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, req.workspace_mb << 20)
    if not strongly_typed:
        if checked.precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)  # layers left unquantised run in FP16, not FP32
        if checked.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # explicit quantisation: the Q/DQ scales of the graph
    size = checked.image_size
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, *[(b, size, size, 3) for b in req.batch])
    config.add_optimization_profile(profile)
    return config


# Why not Polygraphy's builder loaders (NetworkFromOnnxPath, CreateConfig, EngineBytesFromNetwork; Polygraphy
# 0.53 read for this): LoadPlugins opens a library with ctypes, which never calls its getCreators (TensorRT's
# loadLibrary does, once per process: tensorrt_plugin's rule); CreateConfig ignores what set_timing_cache
# returns, so a cache from another GPU or TensorRT release is silently not used (attach_timing_cache replaces
# it); its fp16/int8 options set builder flags that TensorRT 11 no longer has (strongly typed networks take the
# precision from the graph, prepare_onnx). What is left to replace is the ~20 lines of network, parser and
# profile below. Device memory does use Polygraphy (mmad.runtime.backends.cuda_memory).
def build_engine(checked: CheckedRequest, log: Callable[[str], None] = print) -> EngineSidecar:
    """Build and write the engine and its sidecar; returns the sidecar. Needs TensorRT and a GPU."""
    trt = import_tensorrt()
    strongly_typed = tensorrt_major(trt) >= 11
    gpu, capability = gpu_info()
    req = checked.request
    logger = trt.Logger(trt.Logger.WARNING)
    if checked.plugin is not None:
        load_plugin_library(trt, checked.plugin)  # once per process: bench builds fp32, fp16 and int8 in one
    source = prepare_onnx(checked, strongly_typed, log)

    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(source)):
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT cannot parse {source}:\n{errors}")
    config = builder_config(trt, builder, checked, strongly_typed)
    cache_file = timing_cache_path(req)
    attach_timing_cache(config, cache_file, log)
    log(
        f"building {req.out} with TensorRT {trt.__version__} on {gpu} (sm {capability}), {checked.precision}, "
        f"batch {req.batch[0]}..{req.batch[2]} (opt {req.batch[1]})"
    )
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build {req.out} (its log above says why)")
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    names = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
    if not {INPUT_NAME, OUTPUT_MAP, OUTPUT_SCORE} <= names:
        raise EngineBuildError(f"the engine's I/O {sorted(names)} lacks {INPUT_NAME}/{OUTPUT_MAP}/{OUTPUT_SCORE}")
    req.out.parent.mkdir(parents=True, exist_ok=True)
    req.out.write_bytes(bytes(serialized))
    save_timing_cache(config, cache_file)
    sidecar = sidecar_for(checked, trt.__version__, gpu, capability, strongly_typed, source)
    write_sidecar(req.out, sidecar)
    if sidecar.plugin_library and Path(sidecar.plugin_library).is_absolute():
        log(
            f"note: {sidecar.plugin_library} is outside the engine's folder: the runtime loads it only when named "
            f"(--plugin-library or ${PLUGIN_ENV}), from {PLUGIN_INSTALL_DIR}, or when copied beside the engine"
        )
    return sidecar


def sidecar_for(
    checked: CheckedRequest, trt_version: str, gpu: str, capability: str, strongly_typed: bool, source: Path
) -> EngineSidecar:
    """The engine's sidecar (see the module docstring); the plugin relative to the engine's folder when inside it."""
    req = checked.request
    plugin = None
    if checked.plugin is not None:
        try:
            plugin = str(checked.plugin.resolve().relative_to(req.out.resolve().parent))
        except ValueError:
            plugin = str(checked.plugin.resolve())
    size = checked.image_size
    return EngineSidecar(
        tensorrt_version=str(trt_version),
        gpu=gpu,
        compute_capability=capability,
        hardware_compatibility="none",
        precision=checked.precision,
        strongly_typed=strongly_typed,
        plugin_library=plugin,
        plugin_sha256=file_sha256(checked.plugin) if checked.plugin else None,
        onnx=str(source),
        onnx_sha256=file_sha256(source),
        input={
            "name": INPUT_NAME,
            "dtype": INPUT_DTYPE,
            "layout": INPUT_LAYOUT,
            "min": [req.batch[0], size, size, 3],
            "opt": [req.batch[1], size, size, 3],
            "max": [req.batch[2], size, size, 3],
        },
        threshold=float(checked.metadata["threshold"]) if checked.metadata.get("threshold") else None,
        metadata={**checked.metadata, "precision": checked.precision},
    )
