"""The interface every inference backend implements: a loaded model, its input spec, a batch in, maps and
scores out."""

from __future__ import annotations

import abc

import numpy as np

from mmad.runtime.contract import OUTPUT_MAP, OUTPUT_SCORE
from mmad.runtime.model_info import ModelInfo, outputs_error
from mmad.runtime.processing import score_from_map


class Backend(abc.ABC):
    """A loaded model. Subclasses set `info` and implement `infer`."""

    name: str = ""
    info: ModelInfo

    @abc.abstractmethod
    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Images uint8 RGB [B, H, W, 3], (H, W) = (info.height, info.width) -> (maps, scores).

        maps float32 [B, h, w] at the model's output size (the input size for MMAD exports), scores float32 [B].
        """

    def describe(self) -> str:
        """One line for logs: backend, device / provider."""
        return self.name

    def close(self) -> None:
        """Release device memory and sessions; the backend is unusable afterwards."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_batch(self, images: np.ndarray) -> np.ndarray:
        """The batch as a C-contiguous uint8 array, or ValueError naming the expected shape."""
        expected = (self.info.height, self.info.width, 3)
        if images.ndim != 4 or images.shape[1:] != expected or images.dtype != np.uint8:
            raise ValueError(
                f"{self.info.source}: expected uint8 images [B, {expected[0]}, {expected[1]}, 3], "
                f"got {images.dtype} {list(images.shape)}"
            )
        return np.ascontiguousarray(images)

    def model_outputs(self, maps: np.ndarray, scores: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A batch's raw outputs as infer() returns them: maps float32 [B, h, w], scores float32 [B] (the maps'
        maxima when the model has no score output). ConfigError naming the model file and the outputs the
        contract expects when they do not have those shapes (a model that is not an MMAD export)."""
        maps = np.asarray(maps, np.float32)
        batch = maps.shape[0] if maps.ndim else 0
        scores = score_from_map(maps) if scores is None and maps.ndim == 4 else scores
        scores = np.asarray(scores, np.float32) if scores is not None else None
        if maps.ndim != 4 or maps.shape[1] != 1 or scores is None or scores.size != batch:
            found = f"{OUTPUT_MAP!r} {list(maps.shape)}"
            found += f", {OUTPUT_SCORE!r} {list(scores.shape)}" if scores is not None else ""
            raise outputs_error(self.info.source, f"{found} for a batch of {batch}")
        return maps[:, 0], scores.reshape(batch)
