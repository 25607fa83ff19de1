"""`mmad bench`: the latency of one model on every backend this machine has, next to how far each
backend's outputs are from the reference. The tool to run on a new device before trusting it.

    report = run_bench(BenchConfig(models=["runs/bottle"], report_dir=Path("bench")))

Backends (names as `--backends` takes them; a family name such as "tensorrt" selects all of its kind):

    pytorch                    the checkpoint in PyTorch eager mode (mmad.training.inference, loaded
                               with importlib only for this backend: the runtime never imports torch)
    onnxruntime-portable       the standard-ops graph on onnxruntime's CPU provider
    onnxruntime-portable-cuda  the same on the CUDA provider, when onnxruntime has it
    onnxruntime-custom-op      the SelectiveScan custom-op graph on the CPU (onnxruntime-extensions)
    tensorrt-fp32|fp16|int8    TensorRT engines with the SelectiveScan plugin
    (ONNX files in FP16 / INT8 get a -fp16 / -int8 suffix)

`models` is a checkpoint folder, ONNX / engine files, or both. With a checkpoint, PyTorch eager is
the reference and the ONNX graphs and engines not given as files are exported into
<report>/models/ through mmad.export. With files only, the first portable FP32 graph is the
reference (else the first file).

Per backend and batch size, each timed iteration runs what `mmad stream` does to a frame
(runtime.inspector.FrameInspector), on a batch:
    pre    crop/resize the frames to the model's input, stack them      (processing.model_input)
    infer  backend.infer                                                (host<->device copies included)
    post   map back onto each frame, threshold, connected regions       (processing.inspect)
Warm-up iterations run first and are not recorded. The deviation check runs every backend on the
same pre-processed images and compares maps and scores with the reference's.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mmad.runtime.backends import (
    ENGINE_SUFFIXES,
    ONNX_SUFFIXES,
    Backend,
    backend_kind_for_file,
    load_backend,
)
from mmad.runtime.errors import ConfigError
from mmad.runtime.model_info import ModelInfo
from mmad.runtime.processing import full_frame, inspect, model_input

log = logging.getLogger("mmad.bench")

STAGES = ("pre", "infer", "post", "total")
STATISTICS = ("mean", "p50", "p90", "p99", "min", "max")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_FRAME_SIZE = (640, 480)  # generated frames when no --images: the stream benchmark's size
BACKEND_FAMILIES = ("pytorch", "onnxruntime", "tensorrt")


@dataclass
class BenchConfig:
    """What `mmad bench` measures; see the module docstring."""

    models: list[str]
    report_dir: Path
    backends: list[str] | None = None  # selectors: names or families; None: every backend available
    batches: tuple[int, ...] = (1,)
    iters: int = 30
    warmup: int = 5
    images: str | None = None  # a folder of images or a dataset root; None: generated frames
    max_images: int = 8
    frame_size: tuple[int, int] | None = None  # (width, height) to resize frames to before timing
    threads: int | None = None  # CPU threads for onnxruntime and torch; None: the CPUs this process may use
    torch_device: str = "cpu"
    op_library: str | None = None
    plugin_library: str | None = None
    calib_data: list[str] = field(default_factory=list)  # normal images for TensorRT INT8
    plots: bool = True

    def check(self) -> None:
        """ConfigError naming the option that is out of range."""
        if not self.models:
            raise ConfigError("--model: give a checkpoint folder or ONNX / engine files")
        if not self.batches or min(self.batches) < 1:
            raise ConfigError(f"--batch {','.join(map(str, self.batches))}: expected positive integers")
        if self.iters < 1 or self.warmup < 0:
            raise ConfigError(f"--iters {self.iters} / --warmup {self.warmup}: expected iters >= 1, warmup >= 0")
        if self.max_images < 1:
            raise ConfigError(f"--max-images {self.max_images}: expected at least 1")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads {self.threads}: expected at least 1")

    @property
    def cpu_threads(self) -> int:
        if self.threads:
            return self.threads
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parse_batches(text: str) -> tuple[int, ...]:
    """'1,4' -> (1, 4); ConfigError for anything but positive integers."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise ConfigError(f"--batch {text!r}: expected positive integers separated by commas, e.g. 1,4")
    return values


def parse_frame_size(text: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' -> (width, height)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--frame-size {text!r}: expected WIDTHxHEIGHT, e.g. 1280x720") from None
    if width < 16 or height < 16:
        raise ConfigError(f"--frame-size {text!r}: expected at least 16x16")
    return width, height


def selected(name: str, selectors: list[str] | None) -> bool:
    """Whether `--backends` asks for `name`: an exact name, or a prefix ending at a dash ("tensorrt")."""
    if not selectors:
        return True
    return any(name == s or name.startswith(s + "-") for s in selectors)


# --- Backends --------------------------------------------------------------------------------------
class ImportedBackend(Backend):
    """A backend object from outside the runtime (training.inference.TorchBackend) behind Backend.

    The object needs infer(), describe(), close(), and image_size, threshold, metadata attributes.
    """

    def __init__(self, inner, source: str):
        self.inner = inner
        self.name = inner.name
        size = int(inner.image_size)
        self.info = ModelInfo(
            source=source, height=size, width=size, threshold=inner.threshold, metadata=dict(inner.metadata)
        )

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.inner.infer(self.check_batch(images))

    def describe(self) -> str:
        return self.inner.describe()

    def close(self) -> None:
        self.inner.close()


def load_torch_backend(checkpoint: str, device: str, threads: int) -> Backend:
    """PyTorch eager for a checkpoint, imported only now (mmad.training.inference imports torch)."""
    module = importlib.import_module("mmad.training.inference")
    return ImportedBackend(module.TorchBackend(checkpoint, device=device, threads=threads), str(checkpoint))


def register_custom_op() -> None:
    """Serve the SelectiveScan op to onnxruntime on the CPU (mmad.plugins.selective_scan.onnxruntime_op, torch-free)."""
    try:
        ort_ops = importlib.import_module("mmad.plugins.selective_scan.onnxruntime_op")
        ort_ops.register_selective_scan_op()
    except ImportError as err:
        raise ConfigError(
            f"the custom-op graph needs onnxruntime-extensions and mmad.plugins.selective_scan.onnxruntime_op: {err}"
        ) from None


def load_onnx_backend(path: Path, provider: str, config: BenchConfig) -> Backend:
    """An ONNX file in onnxruntime; a custom-op graph gets the SelectiveScan op registered first."""
    from mmad.runtime.backends.onnxruntime import OnnxRuntimeBackend

    try:
        return OnnxRuntimeBackend(path, provider=provider, op_library=config.op_library, threads=config.cpu_threads)
    except ConfigError as err:
        if "SelectiveScan" not in str(err) or config.op_library:
            raise
    register_custom_op()
    return OnnxRuntimeBackend(path, provider=provider, threads=config.cpu_threads)


def backend_name(backend: Backend, provider: str = "cpu") -> str:
    """The report's name for a loaded file backend, from its metadata (scan, precision)."""
    precision = backend.info.metadata.get("precision", "fp32")
    if backend.name == "tensorrt":
        return f"tensorrt-{precision}"
    name = f"onnxruntime-{backend.info.scan}"
    if precision != "fp32":
        name += f"-{precision}"
    return name if provider == "cpu" else f"{name}-{provider}"


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


def onnxruntime_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return []
    return onnxruntime.get_available_providers()


def file_candidates(path: Path, config: BenchConfig, plan: Plan) -> None:
    """Add the backends that run a model file (probing it once for its name), or say why not."""
    kind = backend_kind_for_file(path)
    providers = ["cpu"]
    if kind == "onnxruntime" and "CUDAExecutionProvider" in onnxruntime_providers():
        providers.append("cuda")
    for provider in providers:
        if kind == "tensorrt":
            load = lambda p=path: load_backend(p, "tensorrt", plugin_library=config.plugin_library)
        else:
            load = lambda p=path, pr=provider: load_onnx_backend(p, pr, config)
        try:
            with load() as probe:
                name = backend_name(probe, provider)
        except (ValueError, RuntimeError, OSError) as err:  # ConfigError, or TensorRT / CUDA failing here
            plan.skip(f"{path.name} ({kind}{'' if provider == 'cpu' else '-' + provider})", str(err))
            continue
        if name.startswith("onnxruntime-custom-op") and provider != "cpu":
            continue  # the custom op is served on the CPU only: a CUDA session would mostly measure copies
        if name in plan.names:
            name = f"{name}:{path.name}"  # two files of one kind: keep both, told apart by file
        if selected(name.split(":")[0], config.backends):
            plan.candidates.append(Candidate(name, str(path), load))


class CheckpointExports:
    """The graphs and engines a checkpoint's backends need, exported once into <report>/models/."""

    def __init__(self, checkpoint: str, config: BenchConfig):
        self.checkpoint = checkpoint
        self.config = config
        self.folder = config.report_dir / "models"
        self._made: dict[str, Path | Exception] = {}  # a failure is kept: the backends that need it fail at once

    def _once(self, key: str, make: Callable[[], Path]) -> Path:
        if key not in self._made:
            self.folder.mkdir(parents=True, exist_ok=True)
            try:
                self._made[key] = make()
            except (ValueError, RuntimeError, OSError) as err:
                self._made[key] = err
        made = self._made[key]
        if isinstance(made, Exception):
            raise made
        return made

    def onnx(self, portable: bool) -> Path:
        """The float32 graph, portable or with the SelectiveScan custom op."""
        key = "portable" if portable else "custom-op"

        def make() -> Path:
            onnx_export = importlib.import_module("mmad.export.onnx_export")
            out = self.folder / f"model_{key.replace('-', '_')}.onnx"
            log.info("exporting %s to %s", self.checkpoint, out)
            onnx_export.build_onnx(self.checkpoint, out, portable=portable)
            return out

        return self._once(key, make)

    def engine(self, precision: str) -> Path:
        """A TensorRT engine built from the custom-op graph, batch 1 up to the largest batch benchmarked."""

        def make() -> Path:
            trt_engine = importlib.import_module("mmad.export.trt_engine")
            out = self.folder / f"model_{precision}.engine"
            batch = max(self.config.batches)
            request = trt_engine.EngineRequest(
                onnx=self.onnx(portable=False),
                out=out,
                precision=precision,
                plugins=Path(self.plugin()) if self.plugin() else None,
                calib_dir=[Path(d) for d in self.config.calib_data] if precision == "int8" else [],
                batch=(1, batch, batch),
            )
            trt_engine.build_engine(trt_engine.check_request(request), log=log.info)
            return out

        return self._once(f"tensorrt-{precision}", make)

    def plugin(self) -> str | None:
        return self.config.plugin_library or os.environ.get("MMAD_TRT_PLUGIN")


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


def tensorrt_unavailable(config: BenchConfig, exports: CheckpointExports) -> str | None:
    """Why TensorRT engines cannot be built here, or None."""
    if _missing("tensorrt"):
        return "the tensorrt Python package is not installed (JetPack and NVIDIA's TensorRT images have it)"
    if shutil.which("nvidia-smi") is None and not Path("/etc/nv_tegra_release").exists():
        return "no NVIDIA GPU found (no nvidia-smi, not a Jetson)"
    if not exports.plugin():
        return "no SelectiveScan plugin library: give --plugin-library or set $MMAD_TRT_PLUGIN (cmake -S plugins -B plugins/build)"
    return None


def checkpoint_candidates(checkpoint: str, config: BenchConfig, plan: Plan) -> None:
    """Add PyTorch eager and the exported backends not already given as files, or say why not."""
    threads = config.cpu_threads
    if selected("pytorch", config.backends):
        if _missing("torch"):
            plan.skip("pytorch", "PyTorch is not installed (pip install 'mmad-edge[train]')")
        else:
            plan.candidates.append(
                Candidate("pytorch", checkpoint, lambda: load_torch_backend(checkpoint, config.torch_device, threads))
            )
    exports = CheckpointExports(checkpoint, config)
    wanted: list[tuple[str, Callable[[], Path], Callable[[Path], Backend]]] = [
        ("onnxruntime-portable", lambda: exports.onnx(portable=True), lambda p: load_onnx_backend(p, "cpu", config)),
        ("onnxruntime-custom-op", lambda: exports.onnx(portable=False), lambda p: load_onnx_backend(p, "cpu", config)),
    ]
    if "CUDAExecutionProvider" in onnxruntime_providers():
        wanted.append(
            (
                "onnxruntime-portable-cuda",
                lambda: exports.onnx(portable=True),
                lambda p: load_onnx_backend(p, "cuda", config),
            )
        )
    for precision in ("fp32", "fp16", "int8"):
        wanted.append(
            (
                f"tensorrt-{precision}",
                lambda pr=precision: exports.engine(pr),
                lambda p: load_backend(p, "tensorrt", plugin_library=exports.plugin()),
            )
        )
    no_export = (
        "mmad.export needs the export extra (pip install 'mmad-edge[export]')"
        if _missing("onnx") or _missing("torch")
        else None
    )
    no_trt = tensorrt_unavailable(config, exports)
    for name, export, load in wanted:
        if name in plan.names or not selected(name, config.backends):
            continue  # given as a file, or not asked for
        reason = no_export
        if reason is None and name == "onnxruntime-custom-op" and _missing("onnxruntime_extensions"):
            reason = "onnxruntime-extensions is not installed (it serves the SelectiveScan op on the CPU)"
        if reason is None and name.startswith("tensorrt"):
            reason = no_trt
            if reason is None and name == "tensorrt-int8" and not config.calib_data:
                reason = "INT8 calibration needs normal images: give --calib-data DIR (or --images with a dataset root)"
        if reason:
            plan.skip(name, reason)
        else:
            # export() is cached: prepare() does the work, load() finds the file made.
            plan.candidates.append(
                Candidate(name, f"{checkpoint} (exported)", lambda e=export, ld=load: ld(e()), prepare=export)
            )


def plan_backends(config: BenchConfig) -> Plan:
    """Every backend to run for the models given, the reference first (module docstring)."""
    folders = [m for m in config.models if Path(m).is_dir()]
    files = [Path(m) for m in config.models if not Path(m).is_dir()]
    if len(folders) > 1:
        raise ConfigError(f"--model: one checkpoint folder at a time, got {', '.join(folders)}")
    for path in files:
        if not path.is_file():
            raise ConfigError(f"--model {path}: no such file or folder")
        if path.suffix.lower() not in ONNX_SUFFIXES + ENGINE_SUFFIXES:
            raise ConfigError(
                f"--model {path}: expected a checkpoint folder, an .onnx file or an engine ({', '.join(ENGINE_SUFFIXES)})"
            )
    if config.backends:
        known = {"pytorch", "onnxruntime", "tensorrt"}
        for s in config.backends:
            if s.split("-")[0] not in known:
                raise ConfigError(f"--backends {s!r}: expected names starting with {', '.join(BACKEND_FAMILIES)}")
    plan = Plan()
    for path in files:
        file_candidates(path, config, plan)
    if folders:
        checkpoint_candidates(folders[0], config, plan)
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


# --- Images ----------------------------------------------------------------------------------------
def image_files(root: Path) -> list[Path]:
    """Images under `root` (recursively), ground-truth masks left out, sorted."""
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise ConfigError(f"--images {root}: no such file or folder")
    found = [
        p
        for p in sorted(root.rglob("*"))
        if p.suffix.lower() in IMAGE_SUFFIXES and "ground_truth" not in p.parts and not p.stem.endswith("_mask")
    ]
    if not found:
        raise ConfigError(f"--images {root}: no images ({', '.join(IMAGE_SUFFIXES)}) found under it")
    return found


def evenly_spread(items: list, count: int) -> list:
    """`count` items spread over the list (first and last kept), so test/good and defect folders all appear."""
    if len(items) <= count:
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def read_rgb(path: Path) -> np.ndarray:
    """uint8 RGB [H, W, 3] read with OpenCV; ConfigError naming an unreadable file."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ConfigError(f"--images: cannot read {path} as an image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def load_frames(config: BenchConfig) -> tuple[list[np.ndarray], dict[str, object]]:
    """The frames every backend sees (uint8 RGB [H, W, 3] each) and a description for the report."""
    if config.images:
        paths = evenly_spread(image_files(Path(config.images)), config.max_images)
        frames = [read_rgb(p) for p in paths]
        source: dict[str, object] = {"source": str(config.images), "paths": [str(p) for p in paths]}
    else:
        from mmad.samples.make_video import render_frames

        size = config.frame_size or DEFAULT_FRAME_SIZE
        n = config.max_images
        defect_frames = list(range(1, n, 2))  # every other frame holds a defect
        frames = [f for f, _ in render_frames(n, size, defect_frames, seed=0)]
        source = {"source": "generated (mmad.samples.make_video.render_frames, seed 0)", "defect_frames": defect_frames}
    if config.frame_size:
        width, height = config.frame_size
        frames = [
            cv2.resize(f, (width, height), interpolation=cv2.INTER_LINEAR) if f.shape[:2] != (height, width) else f
            for f in frames
        ]
    source.update(count=len(frames), frame_sizes=sorted({f"{f.shape[1]}x{f.shape[0]}" for f in frames}))
    return frames, source


# --- Measurement -----------------------------------------------------------------------------------
def stage_statistics(samples_ms: np.ndarray) -> dict[str, float]:
    """mean, p50, p90, p99, min, max of the samples (ms)."""
    p50, p90, p99 = np.percentile(samples_ms, [50, 90, 99])
    return {
        "mean": float(samples_ms.mean()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "min": float(samples_ms.min()),
        "max": float(samples_ms.max()),
    }


def time_backend(
    backend: Backend, frames: list[np.ndarray], batch: int, iters: int, warmup: int, threshold: float
) -> dict[str, object]:
    """Time `iters` batches of `batch` frames (cycling through `frames`) after `warmup` untimed ones.

    Returns per-stage statistics (ms per batch), throughput (images/s) and the raw samples.
    """
    size = (backend.info.height, backend.info.width)
    samples = np.zeros((iters, 3))
    for it in range(-warmup, iters):
        start = (it + warmup) * batch
        chosen = [frames[(start + j) % len(frames)] for j in range(batch)]
        t0 = time.perf_counter()
        inputs = np.stack([model_input(f, full_frame(f), size) for f in chosen])
        t1 = time.perf_counter()
        maps, scores = backend.infer(inputs)
        t2 = time.perf_counter()
        for j, f in enumerate(chosen):
            inspect(maps[j], float(scores[j]), threshold, full_frame(f), f.shape)
        t3 = time.perf_counter()
        if it >= 0:
            samples[it] = (t1 - t0, t2 - t1, t3 - t2)
    ms = samples * 1000.0
    per_stage = {"pre": ms[:, 0], "infer": ms[:, 1], "post": ms[:, 2], "total": ms.sum(axis=1)}
    return {
        "batch": batch,
        "iterations": iters,
        "warmup": warmup,
        "stages": {k: stage_statistics(v) for k, v in per_stage.items()},
        "throughput_images_per_s": batch * 1000.0 / float(per_stage["total"].mean()),
        "inference_throughput_images_per_s": batch * 1000.0 / float(per_stage["infer"].mean()),
        "samples_ms": {k: [round(float(x), 4) for x in v] for k, v in per_stage.items()},
    }


def run_all(backend: Backend, inputs: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Maps [N, h, w] and scores [N] of the model-sized inputs uint8 [N, H, W, 3], in batches."""
    maps, scores = [], []
    for i in range(0, len(inputs), batch):
        m, s = backend.infer(inputs[i : i + batch])
        maps.append(np.asarray(m, np.float32))
        scores.append(np.asarray(s, np.float32).reshape(-1))
    return np.concatenate(maps), np.concatenate(scores)


def relative_max_diff(values: np.ndarray, reference: np.ndarray) -> float:
    """max|values - reference| / max|reference|: the contract's measure (as export/verify.py)."""
    scale = float(np.abs(reference).max())
    return float(np.abs(values.astype(np.float64) - reference).max() / (scale if scale > 0 else 1.0))


def fp32_tolerance() -> float:
    """The whole-model FP32 tolerance against PyTorch (mmad.export.verify's MODEL_TOL_FP32).

    Read from the contract when it moves there; mmad.export.verify is torch-free at import.
    """
    from mmad.runtime import contract

    if hasattr(contract, "MODEL_TOL_FP32"):
        return float(contract.MODEL_TOL_FP32)
    from mmad.export.verify import MODEL_TOL_FP32

    return float(MODEL_TOL_FP32)


# TensorRT builds "FP32" engines with TF32 allowed (its default; Ampere and later, Orin included): matmuls
# and convolutions round their inputs to a 10-bit mantissa, so such an engine is held to 1e-3, not the
# float32 tolerance (the bound tests/test_export_trt.py holds a GPU engine to).
TENSORRT_FP32_TOL = 1e-3


def tolerance_for(backend: Backend) -> float:
    """The FP32 tolerance a backend is judged by: TF32 for TensorRT, float32 otherwise."""
    return TENSORRT_FP32_TOL if backend.name == "tensorrt" else fp32_tolerance()


def deviation(
    maps: np.ndarray,
    scores: np.ndarray,
    ref_maps: np.ndarray,
    ref_scores: np.ndarray,
    threshold: float,
    precision: str,
    tolerance: float,
) -> dict[str, object]:
    """How far a backend's outputs are from the reference's, and whether that is acceptable.

    maps [N, h, w], scores [N], like the reference's. FP32 backends are judged against `tolerance`
    (max|Δ| / max|reference|, maps and scores); FP16 / INT8 ones are reported, and flagged only when
    their verdicts (score > threshold) differ from the reference's.
    """
    if maps.shape != ref_maps.shape:
        raise ConfigError(
            f"maps of shape {list(maps.shape)} cannot be compared with the reference's {list(ref_maps.shape)}"
        )
    map_rel, score_rel = relative_max_diff(maps, ref_maps), relative_max_diff(scores, ref_scores)
    agree = float(np.mean((scores > threshold) == (ref_scores > threshold)))
    if precision == "fp32":
        ok = map_rel <= tolerance and score_rel <= tolerance
        status = "ok" if ok else f"DEVIATES (> {tolerance:g})"
    else:
        ok = agree == 1.0
        status = f"{precision}: verdicts agree" if ok else f"{precision}: VERDICTS DIFFER"
    return {
        "map_max_abs": float(np.abs(maps.astype(np.float64) - ref_maps).max()),
        "map_max_rel": map_rel,
        "score_max_abs": float(np.abs(scores.astype(np.float64) - ref_scores).max()),
        "score_max_rel": score_rel,
        "verdict_agreement": agree,
        "tolerance": tolerance if precision == "fp32" else None,
        "ok": bool(ok),
        "status": status,
    }


@dataclass
class Reference:
    """The reference backend's outputs on the deviation images and the threshold used for verdicts."""

    name: str
    maps: np.ndarray
    scores: np.ndarray
    threshold: float
    threshold_source: str


def bench_one(candidate: Candidate, config: BenchConfig, frames: list[np.ndarray], reference: Reference | None):
    """Export (if needed), load, check against the reference, time at each batch size, close.

    Returns (the report's entry for this backend, the reference).
    """
    t = time.perf_counter()
    if candidate.prepare is not None:
        candidate.prepare()
    prepare_s = time.perf_counter() - t
    t = time.perf_counter()
    backend = candidate.load()
    load_s = time.perf_counter() - t
    try:
        log.info("%s: %s (loaded in %.1f s)", candidate.name, backend.describe(), load_s)
        size = (backend.info.height, backend.info.width)
        inputs = np.stack([model_input(f, full_frame(f), size) for f in frames])
        maps, scores = run_all(backend, inputs, min(config.batches))
        if reference is None:
            threshold, source = backend.info.threshold, "model metadata"
            if threshold is None:
                threshold, source = (
                    float(np.median(scores)),
                    "the median of the reference's scores: no threshold in the metadata",
                )
            reference = Reference(candidate.name, maps, scores, float(threshold), source)
        precision = backend.info.metadata.get("precision", "fp32")
        entry: dict[str, object] = {
            "name": candidate.name,
            "describe": backend.describe(),
            "source": candidate.source,
            "precision": precision,
            "scan": backend.info.scan,
            "export_seconds": prepare_s,
            "load_seconds": load_s,
            "input_size": list(size),
            "is_reference": reference.name == candidate.name,
            "deviation": deviation(
                maps, scores, reference.maps, reference.scores, reference.threshold, precision, tolerance_for(backend)
            ),
            "latency": {},
        }
        for batch in config.batches:
            log.info(
                "%s: batch %d, %d warm-up + %d timed iterations", candidate.name, batch, config.warmup, config.iters
            )
            entry["latency"][str(batch)] = time_backend(
                backend, frames, batch, config.iters, config.warmup, reference.threshold
            )
    finally:
        backend.close()
    return entry, reference


def command_line(config: BenchConfig) -> str:
    """The `mmad bench` command that repeats this run, for the report."""
    parts = ["mmad", "bench", "--model", *config.models, "--report", str(config.report_dir)]
    parts += [
        "--batch",
        ",".join(map(str, config.batches)),
        "--iters",
        str(config.iters),
        "--warmup",
        str(config.warmup),
    ]
    options = {
        "--backends": ",".join(config.backends) if config.backends else None,
        "--images": config.images,
        "--max-images": str(config.max_images),
        "--frame-size": "x".join(map(str, config.frame_size)) if config.frame_size else None,
        "--threads": str(config.threads) if config.threads else None,
        "--torch-device": config.torch_device if config.torch_device != "cpu" else None,
        "--op-library": config.op_library,
        "--plugin-library": config.plugin_library,
    }
    parts += [item for key, value in options.items() if value for item in (key, value)]
    return shlex.join(parts)


def run_bench(config: BenchConfig) -> dict[str, object]:
    """Measure every backend, write report.json, report.md and the plots into config.report_dir; return the report."""
    from mmad.runtime.bench.environment import capture_environment
    from mmad.runtime.bench.report import write_report

    config.check()
    config.report_dir.mkdir(parents=True, exist_ok=True)
    environment = capture_environment()  # first: the load average before the bench adds its own
    frames, images = load_frames(config)
    plan = plan_backends(config)
    reference: Reference | None = None
    entries = []
    for candidate in plan.candidates:
        try:
            entry, reference = bench_one(candidate, config, frames, reference)
        except (ValueError, RuntimeError, OSError) as err:  # ConfigError, an export or engine that cannot run here
            if reference is None:
                raise ConfigError(f"the reference backend {candidate.name} failed: {err}") from None
            plan.skip(candidate.name, f"failed: {err}")
            continue
        entries.append(entry)
    report = {
        "command": command_line(config),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "reference": reference.name,
        "threshold": {"value": reference.threshold, "source": reference.threshold_source},
        "settings": {
            "models": list(config.models),
            "batches": list(config.batches),
            "iterations": config.iters,
            "warmup": config.warmup,
            "cpu_threads": config.cpu_threads,
            "torch_device": config.torch_device,
            "images": images,
        },
        "environment": environment,
        "backends": entries,
        "skipped": plan.skipped,
    }
    write_report(report, config.report_dir, plots=config.plots)
    return report


def main_exit_code(report: dict[str, object]) -> int:
    """0 when every FP32 backend is within tolerance of the reference, 1 otherwise (as export/verify.py)."""
    bad = [b["name"] for b in report["backends"] if b["precision"] == "fp32" and not b["deviation"]["ok"]]
    if bad:
        print(f"mmad bench: {', '.join(bad)} deviate from the reference beyond the FP32 tolerance", file=sys.stderr)
        return 1
    return 0
