"""The interface every inference backend implements: a loaded model, its input spec, a batch in, maps and
scores out."""

from __future__ import annotations

import abc

import numpy as np

from mmad.runtime.model_info import ModelInfo


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
