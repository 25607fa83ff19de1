"""The one runtime module that reaches above the runtime: `mmad bench` handed a checkpoint folder.

    backend = load_torch_backend("runs/bottle", device="cpu", threads=4)   # PyTorch eager, the reference
    exports = CheckpointExports("runs/bottle", config)
    exports.onnx(portable=True)                                            # <report>/models/model_portable.onnx
    exports.engine("fp16")                                                 # <report>/models/model_fp16.engine

PyTorch eager comes from mmad.training.inference, the graphs and engines from mmad.export; both are
imported inside the functions that need them, so importing this module (and the rest of the
bench) needs neither torch nor the training and export packages. tests/runtime/test_layering.py
names this module as the only exception to the runtime's layering rule.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mmad.runtime.backends import Backend
from mmad.runtime.bench.config import BenchConfig
from mmad.runtime.model_info import ModelInfo

log = logging.getLogger("mmad.bench")


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

    def op_times(self, images: np.ndarray, runs: int) -> tuple[str, dict[str, float]]:
        """ms per run by operator (self CPU time) from PyTorch's profiler (mmad.runtime.bench.profile)."""
        return "PyTorch profiler", torch_op_times(self.inner.infer, self.check_batch(images), runs)

    def close(self) -> None:
        self.inner.close()


def torch_op_times(infer: Callable[[np.ndarray], object], images: np.ndarray, runs: int) -> dict[str, float]:
    """Self CPU ms per run of each PyTorch operator (autograd Functions such as the scan's _CpuScan by their
    name) over `runs` calls of infer(images) after one untimed call. torch is imported only now."""
    from torch.profiler import ProfilerActivity, profile

    infer(images)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(runs):
            infer(images)
    return {e.key: e.self_cpu_time_total / 1000.0 / runs for e in prof.key_averages() if e.self_cpu_time_total > 0}


def load_torch_backend(checkpoint: str, device: str, threads: int) -> Backend:
    """PyTorch eager for a checkpoint, imported only now (mmad.training.inference imports torch)."""
    from mmad.training.inference import TorchBackend

    return ImportedBackend(TorchBackend(checkpoint, device=device, threads=threads), str(checkpoint))


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
            from mmad.export import onnx_export

            out = self.folder / f"model_{key.replace('-', '_')}.onnx"
            log.info("exporting %s to %s", self.checkpoint, out)
            onnx_export.build_onnx(self.checkpoint, out, portable=portable)
            return out

        return self._once(key, make)

    def engine(self, precision: str) -> Path:
        """A TensorRT engine built from the custom-op graph, batch 1 up to the largest batch benchmarked."""

        def make() -> Path:
            from mmad.export import trt_engine

            out = self.folder / f"model_{precision}.engine"
            batch = max(self.config.batches)
            plugin = self.config.trt_plugin
            request = trt_engine.EngineRequest(
                onnx=self.onnx(portable=False),
                out=out,
                precision=precision,
                plugin_library=Path(plugin) if plugin else None,
                calib_data=[Path(d) for d in self.config.calib_data] if precision == "int8" else [],
                batch=(1, batch, batch),
            )
            trt_engine.build_engine(trt_engine.check_request(request), log=log.info)
            return out

        return self._once(f"tensorrt-{precision}", make)
