"""Fixtures shared by every test folder, each built once per session.

    generated_dataset   an MVTec-layout dataset of two generated categories (object, texture)
    tiny_checkpoint     a `tiny`-preset model (random encoder, weights perturbed away from their
                        initialisation so every layer matters) saved as a checkpoint, with thresholds
    synthetic_onnx      the runtime's synthetic ONNX model (torch-free, separates defect frames)
    real_dataset        a real MVTec-layout category by name, or a skip when it is not on this machine

Real data: $MMAD_TEST_DATA names a folder of MVTec-layout categories (e.g. bottle, magnetic_tile);
without it the data folder beside the checkout's parent (the dev and CI machines' layout) is used.
Tests that must run everywhere use the generated data.

The tests mirror the code: tests/{training,export,plugins,runtime,e2e}.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mmad.runtime.contract import THRESHOLD_F1, THRESHOLD_NORMAL

REPO = Path(__file__).resolve().parents[1]
TINY_THRESHOLDS = {THRESHOLD_NORMAL: 0.25, THRESHOLD_F1: 0.375}


def real_data_root() -> Path:
    """Where real MVTec-layout categories are looked for (may not exist)."""
    configured = os.environ.get("MMAD_TEST_DATA")
    return Path(configured) if configured else REPO.parent / "shared" / "data"


def real_category(name: str) -> Path | None:
    """The real category `name`, or None when this machine does not have it."""
    folder = real_data_root() / name
    return folder if (folder / "train").is_dir() else None


@pytest.fixture(scope="session")
def real_dataset():
    """real_dataset("bottle") -> the category folder; skips the test when it is absent."""

    def find(name: str) -> Path:
        folder = real_category(name)
        if folder is None:
            pytest.skip(f"real category {name!r} not found under {real_data_root()} (set MMAD_TEST_DATA)")
        return folder

    return find


@pytest.fixture(scope="session")
def generated_dataset(tmp_path_factory) -> Path:
    """Root of a generated dataset: object/ and texture/, 6 training images, 2 good and 1 defect per type."""
    from mmad.samples.make_dataset import make_dataset

    root = tmp_path_factory.mktemp("generated_dataset")
    return make_dataset(
        root, categories=["object", "texture"], n_train=6, n_test_good=2, n_test_defect_per_type=1, seed=3
    )


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny-preset checkpoint folder (random encoder, perturbed weights, TINY_THRESHOLDS)."""
    torch = pytest.importorskip("torch")
    from mmad.training.checkpoint import CheckpointInfo, save_checkpoint
    from mmad.training.config import tiny_preset
    from mmad.training.encoders import build_encoder
    from mmad.training.models import AnomalyModel

    torch.manual_seed(0)
    cfg = tiny_preset()
    model = AnomalyModel(cfg.model, build_encoder(cfg.model.encoder, weights=None, random_init=True).freeze())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp("tiny_checkpoint")
    save_checkpoint(folder, model, CheckpointInfo(config=cfg, thresholds=dict(TINY_THRESHOLDS)))
    return folder


@pytest.fixture(scope="session")
def synthetic_onnx(tmp_path_factory) -> Path:
    """The synthetic model at 256x256 (see mmad.runtime.synthetic)."""
    pytest.importorskip("onnx", reason="writing the synthetic model needs the onnx package")
    from mmad.runtime.synthetic import synthetic_model

    return synthetic_model(tmp_path_factory.mktemp("synthetic") / "synthetic.onnx")
