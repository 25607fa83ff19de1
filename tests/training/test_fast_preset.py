"""What the fast preset adds to the published recipe (issue 12): the per-pixel normalisation of the anomaly map
by the training normals' statistics (in the forward pass, the checkpoint and the exported graph), the top-k image
score, the cosine loss and feature noise, and the training curves."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from export_checks import assert_portable_export_matches

from mmad.runtime.errors import ConfigError
from mmad.training.checkpoint import CheckpointInfo, load_model, read_info, save_checkpoint
from mmad.training.config import RunConfig, fast_preset, paper_preset, tiny_preset
from mmad.training.encoders import build_encoder
from mmad.training.models import AnomalyModel
from mmad.training.train import reconstruction_loss, train


def tiny_config(**model) -> RunConfig:
    cfg = tiny_preset()
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, normalize_map=True, **model))


@pytest.fixture(scope="module")
def fitted():
    """A tiny model (random encoder, perturbed weights) with its map statistics fitted on 6 random images."""
    torch.manual_seed(0)
    cfg = tiny_config(score_topk=16)
    model = AnomalyModel(cfg.model, build_encoder(cfg.model.encoder, weights=None, random_init=True)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    images = torch.randn(6, 3, 256, 256)
    raw = model.raw_maps(model.encode(images))
    model.fit_map_normalisation(raw)
    return cfg, model, images, raw


def test_normalised_map_is_in_the_forward_pass(fitted):
    _, model, images, raw = fitted
    std = raw.double().std(dim=0)
    expected = (raw.double() - raw.double().mean(dim=0)) / (std + std.mean())
    with torch.no_grad():
        out = model(images)
    torch.testing.assert_close(out.anomaly_map.double(), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.score, out.anomaly_map.flatten(1).topk(16).values.mean(1))
    # The un-normalised maps are still what raw_maps gives, and the buffers are left as fitted.
    torch.testing.assert_close(model.raw_maps(model.encode(images)), raw)


def test_normalisation_removes_a_fixed_highlight():
    """Normal maps share a bright highlight; a fainter defect elsewhere must outscore every normal after
    normalisation, and does not before it."""
    cfg = tiny_config().model
    model = AnomalyModel(cfg, build_encoder(cfg.encoder, weights=None, random_init=True))
    gen = torch.Generator().manual_seed(1)
    normals = 0.1 + 0.01 * torch.rand(40, 1, 256, 256, generator=gen)
    normals[:, :, 100:120, 100:120] += 0.5  # the specular highlight of every normal part
    model.fit_map_normalisation(normals[:30])
    defect = normals[30:31].clone()
    defect[:, :, 10:20, 200:210] += 0.2
    unseen = normals[31:]
    assert model.image_score(defect) <= model.image_score(unseen).max()  # raw: the highlight wins
    assert model.image_score(model.normalise_map(defect)) > model.image_score(model.normalise_map(unseen)).max()


def test_map_statistics_travel_with_the_checkpoint(fitted, tmp_path):
    cfg, model, images, _ = fitted
    save_checkpoint(tmp_path, model, CheckpointInfo(config=cfg))
    loaded, _ = load_model(tmp_path)
    assert torch.equal(loaded.map_mean, model.map_mean) and torch.equal(loaded.map_scale, model.map_scale)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images).anomaly_map, model(images).anomaly_map)


def test_exported_graph_produces_the_normalised_maps(fitted, tmp_path):
    cfg, model, _, _ = fitted
    assert_portable_export_matches(model, cfg, tmp_path, seed=2)


def test_fit_refuses_a_model_without_normalisation_and_too_few_maps(fitted):
    _, model, _, raw = fitted
    with pytest.raises(ValueError, match=r"maps \[N >= 2, 1, S, S\]"):
        model.fit_map_normalisation(raw[:1])
    plain = AnomalyModel(tiny_preset().model, model.encoder)
    with pytest.raises(ValueError, match="normalize_map=False"):
        plain.fit_map_normalisation(raw)
    assert "map_mean" not in plain.state_dict()  # older checkpoints load unchanged


def test_cosine_loss_and_unknown_loss():
    f = [torch.randn(2, 4, 8, 8), torch.randn(2, 3, 4, 4)]
    g = [torch.randn_like(x) for x in f]
    expected = sum(2.0 * (1 - torch.nn.functional.cosine_similarity(b, a, dim=1)).mean() for a, b in zip(f, g))
    torch.testing.assert_close(reconstruction_loss(f, g, 2.0, "cosine"), expected)
    assert reconstruction_loss(f, f, 2.0, "cosine").abs() < 1e-6
    cfg = tiny_preset()
    with pytest.raises(ConfigError, match="train.loss"):
        dataclasses.replace(cfg.train, loss="l1").validate()


def test_paper_preset_keeps_the_published_recipe():
    paper = paper_preset()
    assert (paper.train.loss, paper.train.feature_noise) == ("mse", 0.0)
    assert (paper.model.normalize_map, paper.model.score_topk, paper.model.encoder) == (False, 1, "resnet34")
    assert paper.model.feature_smoothing == 1
    fast_preset().validate()


def test_training_fits_the_statistics_and_draws_curves(generated_dataset, tmp_path):
    cfg = tiny_config(score_topk=4)
    cfg = dataclasses.replace(
        cfg,
        train=dataclasses.replace(
            cfg.train, epochs=2, eval_every=1, eval_max_images=3, loss="cosine", feature_noise=0.2
        ),
    )
    out = train(
        cfg, [str(generated_dataset)], tmp_path / "run", encoder_weights=None, random_encoder=True, log=lambda _: None
    )
    model, info = load_model(out)
    assert float(model.map_scale.min()) > 0 and float(model.map_mean.abs().max()) > 0
    assert [entry["epoch"] for entry in info.history] == [1, 2] and all("loss" in e for e in info.history)
    assert set(info.history[0]) >= {"object", "texture"}  # evaluated after epoch 1 (not after the last)
    assert (out / "curves.png").stat().st_size > 0
    assert json.loads((out / "checkpoint.json").read_text())["progress"]["minutes"] >= 0
    assert read_info(out).thresholds  # the deployment thresholds are fitted on the normalised maps
