"""Which backends `mmad bench` runs for the models it is given, the reference first, and why the
others cannot run here.

    plan = plan_backends(config)      # Plan: candidates (name, source, load, prepare) + skipped (name, reason)

Model files are probed once for their report name (onnxruntime-portable, tensorrt-fp16, ...); an FP32
ONNX file also runs in OpenVINO, at FP32 and FP16 (openvino-fp32, openvino-fp16), when it is installed. A
checkpoint folder adds PyTorch eager and the graphs and engines not already given as files,
exported on demand through the checkpoint adapter (checkpoint.py); OpenVINO runs its custom-op graph. The
reference is PyTorch eager when there is a checkpoint, else the first portable FP32 graph, else the first file.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from mmad.runtime.backends import ENGINE_SUFFIXES, ONNX_SUFFIXES, Backend, backend_kind_for_file, load_backend
from mmad.runtime.bench.checkpoint import CheckpointExports, load_torch_backend
from mmad.runtime.bench.config import BenchConfig
from mmad.runtime.contract import PLUGIN_ENV
from mmad.runtime.errors import ConfigError

log = logging.getLogger("mmad.bench")
PRECISIONS = ("fp32", "fp16", "int8")  # the TensorRT engines a checkpoint gets
OPENVINO_PRECISIONS = ("fp32", "fp16")  # OpenVINO's inference precisions for an FP32 graph


def selected(name: str, selectors: list[str] | None) -> bool:
    """Whether `--backends` asks for `name`: an exact name, or a prefix ending at a dash ("tensorrt")."""
    if not selectors:
        return True
    return any(name == s or name.startswith(s + "-") for s in selectors)


@dataclass
class Candidate:
    """A backend to benchmark: its report name, what it runs, how to load it and what to export first."""

    name: str
    source: str
    load: Callable[[], Backend]
    prepare: Callable[[], object] | None = None  # an export or engine build, timed apart from loading


@dataclass
class Plan:
    """The backends to run (the reference first) and those left out, with the reason."""

    candidates: list[Candidate] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def skip(self, name: str, reason: str) -> None:
        log.info("skipping %s: %s", name, reason)
        self.skipped.append({"name": name, "reason": reason})

    @property
    def names(self) -> set[str]:
        return {c.name for c in self.candidates}


# --- Loading -------------------------------------------------------------------------------------
def load_onnx_backend(path: Path, provider: str, config: BenchConfig) -> Backend:
    """An ONNX file in onnxruntime (a custom-op graph gets the SelectiveScan op from the backend itself)."""
    from mmad.runtime.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(path, provider=provider, op_library=config.op_library, threads=config.cpu_threads)


def load_openvino_backend(path: Path, precision: str, config: BenchConfig, compile_now: bool = True) -> Backend:
    """An ONNX file in OpenVINO (a custom-op graph gets the project's SelectiveScan extension from the backend;
    --op-library names the onnxruntime op in a bench, so it is not passed). compile_now=False: metadata only."""
    from mmad.runtime.backends.openvino import OpenVinoBackend

    return OpenVinoBackend(path, precision=precision, threads=config.cpu_threads, compile_now=compile_now)


def load_engine_backend(path: Path, plugin_library: str | None) -> Backend:
    return load_backend(path, "tensorrt", plugin_library=plugin_library)


def backend_name(backend: Backend, provider: str = "cpu") -> str:
    """The report's name for a loaded file backend, from its metadata (scan, precision)."""
    precision = backend.info.metadata.get("precision", "fp32")
    if backend.name == "tensorrt":
        return f"tensorrt-{precision}"
    name = f"onnxruntime-{backend.info.scan}"
    if precision != "fp32":
        name += f"-{precision}"
    return name if provider == "cpu" else f"{name}-{provider}"


# --- What is missing here --------------------------------------------------------------------------
def onnxruntime_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return []
    return onnxruntime.get_available_providers()


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


def openvino_unavailable() -> str | None:
    """Why OpenVINO cannot run here, or None."""
    return "the openvino package is not installed (pip install openvino)" if _missing("openvino") else None


def tensorrt_unavailable(config: BenchConfig) -> str | None:
    """Why TensorRT engines cannot be built here, or None."""
    if _missing("tensorrt"):
        return "the tensorrt Python package is not installed (JetPack and NVIDIA's TensorRT images have it)"
    if shutil.which("nvidia-smi") is None and not Path("/etc/nv_tegra_release").exists():
        return "no NVIDIA GPU found (no nvidia-smi, not a Jetson)"
    if not config.trt_plugin:
        return (
            f"no SelectiveScan plugin library: give --plugin-library or set ${PLUGIN_ENV} "
            "(cmake -S plugins -B plugins/build)"
        )
    return None


def export_unavailable(name: str, config: BenchConfig) -> str | None:
    """Why the checkpoint's backend `name` cannot be exported and run here, or None."""
    if _missing("onnx") or _missing("torch"):
        return "mmad.export needs the export extra (pip install 'mmad-edge[export]')"
    if name == "onnxruntime-custom-op" and _missing("onnxruntime_extensions"):
        return "onnxruntime-extensions is not installed (it serves the SelectiveScan op on the CPU)"
    if name.startswith("openvino"):
        return openvino_unavailable()
    if name.startswith("tensorrt"):
        reason = tensorrt_unavailable(config)
        if reason is None and name == "tensorrt-int8" and not config.calib_data:
            reason = "INT8 calibration needs normal images: give --calib-data DIR (or --images with a dataset root)"
        return reason
    return None


# --- Planning ------------------------------------------------------------------------------------
def _file_probes(path: Path, kind: str, config: BenchConfig) -> list[tuple[str, Callable[[], Backend]]]:
    """(runner, load) of each way this machine can run a model file: "tensorrt", an onnxruntime provider
    ("cpu", "cuda"), or "openvino" (loaded for its metadata only: a probe need not compile the graph)."""
    if kind == "tensorrt":
        return [("tensorrt", partial(load_engine_backend, path, config.plugin_library))]
    probes = [("cpu", partial(load_onnx_backend, path, "cpu", config))]
    if "CUDAExecutionProvider" in onnxruntime_providers():
        probes.append(("cuda", partial(load_onnx_backend, path, "cuda", config)))
    if openvino_unavailable() is None:
        probes.append(("openvino", partial(load_openvino_backend, path, "fp32", config, compile_now=False)))
    return probes


def _file_runs(
    path: Path, runner: str, load: Callable[[], Backend], probe: Backend, config: BenchConfig
) -> list[tuple[str, Callable[[], Backend]]]:
    """(report name, load) of the candidates that one probed runner adds for a file: itself, loaded as probed,
    or for OpenVINO one per precision."""
    if runner != "openvino":
        return [(backend_name(probe, runner), load)]
    if probe.info.metadata.get("precision", "fp32") != "fp32":
        raise ConfigError("OpenVINO is given the FP32 graph: it lowers the precision itself (openvino-fp16)")
    runs = []
    for precision in OPENVINO_PRECISIONS:
        name = "openvino-" + ("portable-" if probe.info.scan == "portable" else "") + precision  # fp32 graphs only
        runs.append((name, partial(load_openvino_backend, path, precision, config)))
    return runs


def file_candidates(path: Path, config: BenchConfig, plan: Plan) -> None:
    """Add the backends that run a model file (probing it once per runner for its name), or say why not."""
    kind = backend_kind_for_file(path)
    for runner, load in _file_probes(path, kind, config):
        try:
            with load() as probe:
                runs = _file_runs(path, runner, load, probe, config)
        except (ValueError, RuntimeError, OSError) as err:  # ConfigError, or TensorRT / CUDA failing here
            label = {"cpu": kind, "cuda": f"{kind}-cuda"}.get(runner, runner)
            plan.skip(f"{path.name} ({label})", str(err))
            continue
        for name, run_load in runs:
            if name.startswith("onnxruntime-custom-op") and runner == "cuda":
                continue  # the custom op is served on the CPU only: a CUDA session would mostly measure copies
            if name in plan.names:
                name = f"{name}:{path.name}"  # two files of one kind: keep both, told apart by file
            if selected(name.split(":")[0], config.backends):
                plan.candidates.append(Candidate(name, str(path), run_load))


def checkpoint_exports(
    exports: CheckpointExports, config: BenchConfig
) -> list[tuple[str, Callable[[], Path], Callable[[Path], Backend]]]:
    """(name, export, load) of every exported backend a checkpoint can have on this machine."""
    portable, custom_op = partial(exports.onnx, portable=True), partial(exports.onnx, portable=False)
    on_cpu = partial(load_onnx_backend, provider="cpu", config=config)
    wanted = [("onnxruntime-portable", portable, on_cpu), ("onnxruntime-custom-op", custom_op, on_cpu)]
    if "CUDAExecutionProvider" in onnxruntime_providers():
        on_cuda = partial(load_onnx_backend, provider="cuda", config=config)
        wanted.append(("onnxruntime-portable-cuda", portable, on_cuda))
    for precision in OPENVINO_PRECISIONS:
        wanted.append(
            (f"openvino-{precision}", custom_op, partial(load_openvino_backend, precision=precision, config=config))
        )
    engine = partial(load_engine_backend, plugin_library=config.trt_plugin)
    wanted += [(f"tensorrt-{precision}", partial(exports.engine, precision), engine) for precision in PRECISIONS]
    return wanted


def _load_exported(export: Callable[[], Path], load: Callable[[Path], Backend]) -> Backend:
    return load(export())  # export() is cached: prepare() did the work, this finds the file made


def checkpoint_candidates(checkpoint: str, config: BenchConfig, plan: Plan) -> None:
    """Add PyTorch eager and the exported backends not already given as files, or say why not."""
    if selected("pytorch", config.backends):
        if _missing("torch"):
            plan.skip("pytorch", "PyTorch is not installed (pip install 'mmad-edge[train]')")
        else:
            load = partial(load_torch_backend, checkpoint, config.torch_device, config.cpu_threads)
            plan.candidates.append(Candidate("pytorch", checkpoint, load))
    for name, export, load in checkpoint_exports(CheckpointExports(checkpoint, config), config):
        if name in plan.names or not selected(name, config.backends):
            continue  # given as a file, or not asked for
        reason = export_unavailable(name, config)
        if reason:
            plan.skip(name, reason)
        else:
            candidate = Candidate(name, f"{checkpoint} (exported)", partial(_load_exported, export, load), export)
            plan.candidates.append(candidate)


def split_models(models: list[str]) -> tuple[str | None, list[Path]]:
    """(the checkpoint folder or None, the model files), ConfigError for anything else."""
    folders = [m for m in models if Path(m).is_dir()]
    files = [Path(m) for m in models if not Path(m).is_dir()]
    if len(folders) > 1:
        raise ConfigError(f"--model: one checkpoint folder at a time, got {', '.join(folders)}")
    for path in files:
        if not path.is_file():
            raise ConfigError(f"--model {path}: no such file or folder")
        if path.suffix.lower() not in ONNX_SUFFIXES + ENGINE_SUFFIXES:
            raise ConfigError(
                f"--model {path}: expected a checkpoint folder, an .onnx file or an engine "
                f"({', '.join(ENGINE_SUFFIXES)})"
            )
    return (folders[0] if folders else None), files


def plan_backends(config: BenchConfig) -> Plan:
    """Every backend to run for the models given, the reference first (module docstring)."""
    checkpoint, files = split_models(config.models)
    plan = Plan()
    for path in files:
        file_candidates(path, config, plan)
    if checkpoint:
        checkpoint_candidates(checkpoint, config, plan)
    plan.candidates.sort(key=lambda c: reference_rank(c.name))
    if not plan.candidates:
        reasons = "; ".join(f"{s['name']}: {s['reason']}" for s in plan.skipped) or "none matched --backends"
        raise ConfigError(f"nothing to benchmark ({reasons})")
    return plan


def reference_rank(name: str) -> int:
    """Sort key that puts the reference first: PyTorch eager, else a portable FP32 graph, else as given."""
    if name == "pytorch":
        return 0
    if name.split(":")[0] == "onnxruntime-portable":
        return 1
    return 2
