"""The run of `mmad bench`: for each planned backend, export (if needed), load, check against the
reference, time at each batch size, close; then write the report.

    report = run_bench(BenchConfig(models=["runs/bottle"], report_dir=Path("bench")))
    exit_code = main_exit_code(report)      # 1 when an FP32 backend deviates from the reference

Each timed iteration runs what `mmad stream` does to a frame (runtime.inspector.FrameInspector), on
a batch:
    pre    crop/resize the frames to the model's input, stack them      (processing.model_input)
    infer  backend.infer                                                (host<->device copies included)
    post   map back onto each frame, threshold, connected regions       (processing.inspect)
Warm-up iterations run first and are not recorded.
"""

from __future__ import annotations

import logging
import sys
import time

import numpy as np

from mmad.runtime.backends import Backend
from mmad.runtime.bench.candidates import Candidate, plan_backends
from mmad.runtime.bench.config import BenchConfig, command_line
from mmad.runtime.bench.deviation import Reference, deviation, run_all, tolerance_for
from mmad.runtime.bench.environment import capture_environment
from mmad.runtime.bench.frames import load_frames
from mmad.runtime.bench.profile import profile_backend
from mmad.runtime.bench.report import write_report
from mmad.runtime.errors import ConfigError
from mmad.runtime.processing import full_frame, inspect, model_input

log = logging.getLogger("mmad.bench")

STAGES = ("pre", "infer", "post", "total")
STATISTICS = ("mean", "p50", "p90", "p99", "min", "max")


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
            inspect(
                maps[j], float(scores[j]), threshold, full_frame(f), f.shape,
                pixel_threshold=backend.info.pixel_threshold,
            )  # fmt: skip
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


def _timed(step) -> tuple[object, float]:
    t = time.perf_counter()
    result = step()
    return result, time.perf_counter() - t


def measure(
    candidate: Candidate,
    backend: Backend,
    config: BenchConfig,
    frames: list[np.ndarray],
    reference: Reference | None,
    seconds: dict[str, float],
) -> tuple[dict[str, object], Reference]:
    """A loaded backend's report entry (deviation from the reference, latency per batch size), and the
    reference: this backend's outputs when there is none yet. `seconds`: its export and load times."""
    size = (backend.info.height, backend.info.width)
    inputs = np.stack([model_input(f, full_frame(f), size) for f in frames])
    maps, scores = run_all(backend, inputs, min(config.batches))
    if reference is None:
        reference = Reference.of(candidate.name, backend, maps, scores)
    precision = backend.info.metadata.get("precision", "fp32")
    entry: dict[str, object] = {
        "name": candidate.name,
        "describe": backend.describe(),
        "source": candidate.source,
        "precision": precision,
        "scan": backend.info.scan,
        **seconds,
        "input_size": list(size),
        "is_reference": reference.name == candidate.name,
        "deviation": deviation(maps, scores, reference, precision, tolerance_for(backend)),
        "latency": {},
    }
    for batch in config.batches:
        log.info("%s: batch %d, %d warm-up + %d timed iterations", candidate.name, batch, config.warmup, config.iters)
        entry["latency"][str(batch)] = time_backend(
            backend, frames, batch, config.iters, config.warmup, reference.threshold
        )
    if config.profile:  # after the timing, on an instrumented copy, so the timed runs stay clean
        log.info("%s: profiling %d runs at batch %d", candidate.name, config.profile_runs, min(config.batches))
        batch = inputs[np.arange(min(config.batches)) % len(inputs)]
        entry["profile"] = profile_backend(backend, batch, config.profile_runs)
    return entry, reference


def bench_one(candidate: Candidate, config: BenchConfig, frames: list[np.ndarray], reference: Reference | None):
    """Export (if needed), load, check against the reference, time at each batch size, close.

    Returns (the report's entry for this backend, the reference).
    """
    _, prepare_s = _timed(candidate.prepare) if candidate.prepare is not None else (None, 0.0)
    backend, load_s = _timed(candidate.load)
    try:
        log.info("%s: %s (loaded in %.1f s)", candidate.name, backend.describe(), load_s)
        seconds = {"export_seconds": prepare_s, "load_seconds": load_s}
        return measure(candidate, backend, config, frames, reference, seconds)
    finally:
        backend.close()


def run_bench(config: BenchConfig) -> dict[str, object]:
    """Measure every backend, write report.json, report.md and the plots into config.report_dir; return the report."""
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
        "settings": settings(config, images),
        "environment": environment,
        "backends": entries,
        "skipped": plan.skipped,
    }
    write_report(report, config.report_dir, plots=config.plots)
    return report


def settings(config: BenchConfig, images: dict[str, object]) -> dict[str, object]:
    """The report's record of how the run was made."""
    return {
        "models": list(config.models),
        "batches": list(config.batches),
        "iterations": config.iters,
        "warmup": config.warmup,
        "cpu_threads": config.cpu_threads,
        "torch_device": config.torch_device,
        "images": images,
        "profile_runs": config.profile_runs if config.profile else 0,
    }


def main_exit_code(report: dict[str, object]) -> int:
    """0 when every FP32 backend is within tolerance of the reference, 1 otherwise (as export/verify.py)."""
    bad = [b["name"] for b in report["backends"] if b["precision"] == "fp32" and not b["deviation"]["ok"]]
    if bad:
        print(f"mmad bench: {', '.join(bad)} deviate from the reference beyond the FP32 tolerance", file=sys.stderr)
        return 1
    return 0
