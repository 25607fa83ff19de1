"""PyTorch eager inference behind the runtime's backend interface, for benchmarks and reference checks.

    backend = TorchBackend("runs/bottle")                 # a checkpoint folder (training.checkpoint)
    maps, scores = backend.infer(images)                  # uint8 RGB [B, S, S, 3] -> [B, S, S], [B]

It is fed exactly what an exported graph is fed (uint8 NHWC, normalisation inside), so its outputs
are the reference an exported model is compared with. `mmad bench` loads this module with importlib
only when a checkpoint is benchmarked: the runtime itself never imports torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_model
from .thresholds import deployment_thresholds


class TorchBackend:
    """A checkpoint in PyTorch eager mode: uint8 RGB [B, S, S, 3] -> (maps float32 [B, S, S], scores float32 [B]).

    device: "cpu", "cuda", "cuda:1" … ("auto": cuda when available). threads: CPU threads for
    torch (None: leave torch's setting alone). On CUDA, TF32 is switched off so the reference is
    float32 throughout.
    """

    name = "pytorch"

    def __init__(self, checkpoint: str | Path, device: str = "cpu", threads: int | None = None):
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if threads:
            torch.set_num_threads(threads)
        if device.startswith("cuda"):
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        self.device = torch.device(device)
        self.model, self.checkpoint_info = load_model(checkpoint, self.device)
        cfg = self.model.cfg
        self.image_size: int = cfg.image_size
        deployment = deployment_thresholds(self.checkpoint_info.thresholds)  # what an export writes as "threshold"
        self.threshold: float | None = deployment.image if deployment is not None else None
        self.metadata: dict[str, str] = {
            "scan": "pytorch",
            "precision": "fp32",
            "arch": cfg.arch,
            "encoder": cfg.encoder,
        }
        self._mean = torch.tensor(cfg.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(cfg.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    def describe(self) -> str:
        return f"pytorch {torch.__version__} eager on {self.device} ({torch.get_num_threads()} CPU threads)"

    @torch.no_grad()
    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 RGB [B, S, S, 3] -> (anomaly maps float32 [B, S, S], scores float32 [B])."""
        size = self.image_size
        if images.ndim != 4 or images.shape[1:] != (size, size, 3) or images.dtype != np.uint8:
            raise ValueError(
                f"TorchBackend: expected uint8 images [B, {size}, {size}, 3], got {images.dtype} {list(images.shape)}"
            )
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        # The same operations, in the same order, as training.data.ImageTransform.normalize and the
        # exported graph's input block.
        x = x.permute(0, 3, 1, 2).to(torch.float32).div(255.0)
        out = self.model((x - self._mean) / self._std)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # so a timer around infer() measures the work, not the launch
        return out.anomaly_map[:, 0].float().cpu().numpy(), out.score.float().cpu().numpy()

    def close(self) -> None:
        self.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
