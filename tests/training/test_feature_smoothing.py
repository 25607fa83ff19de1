"""`model.feature_smoothing` (issue 12): the encoder features averaged over their k×k neighbourhood before the
fuser and as the decoder's target, in the forward pass and the exported graph; the knn baseline keeps its own
3×3 average of the unsmoothed features."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from export_checks import assert_portable_export_matches

from mmad.runtime.errors import ConfigError
from mmad.training.baseline import KnnBaseline
from mmad.training.config import RunConfig, tiny_preset
from mmad.training.encoders import build_encoder
from mmad.training.models import AnomalyModel


def smoothed_config(k: int) -> RunConfig:
    cfg = tiny_preset()
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, feature_smoothing=k))


@pytest.fixture(scope="module")
def models():
    """Two tiny models on one random encoder: smoothing off and 3×3."""
    torch.manual_seed(0)
    plain_cfg, smooth_cfg = smoothed_config(1).model, smoothed_config(3).model
    encoder = build_encoder(plain_cfg.encoder, weights=None, random_init=True)
    return AnomalyModel(plain_cfg, encoder).eval(), AnomalyModel(smooth_cfg, encoder).eval()


def test_encode_averages_each_scale_over_its_neighbourhood(models):
    plain, smooth = models
    images = torch.randn(2, 3, 256, 256)
    for raw, smoothed in zip(plain.encode(images), smooth.encode(images)):
        padded = torch.nn.functional.pad(raw, (1, 1, 1, 1))
        ones = torch.nn.functional.pad(torch.ones_like(raw[:, :1]), (1, 1, 1, 1))
        windows = sum(padded[..., i : i + raw.shape[2], j : j + raw.shape[3]] for i in range(3) for j in range(3))
        counts = sum(ones[..., i : i + raw.shape[2], j : j + raw.shape[3]] for i in range(3) for j in range(3))
        torch.testing.assert_close(smoothed, windows / counts)  # a corner averages its 4 cells, an edge 6
        assert not torch.allclose(smoothed, raw)


def test_the_baseline_does_not_smooth_twice(models):
    plain, smooth = models
    images = torch.randn(2, 3, 256, 256)
    torch.testing.assert_close(KnnBaseline(smooth, 100).patches(images), KnnBaseline(plain, 100).patches(images))


def test_exported_graph_matches_the_smoothed_model(models, tmp_path):
    _, smooth = models
    assert_portable_export_matches(smooth, smoothed_config(3), tmp_path, seed=3)


@pytest.mark.parametrize("k, message", [(2, "must be odd"), (0, "expected a value >= 1, got 0")])
def test_a_window_without_a_centre_is_refused(k, message):
    with pytest.raises(ConfigError, match=f"model.feature_smoothing.*{message}"):
        smoothed_config(k).model.validate()
