"""The knn baseline (training/baseline.py): it separates generated defects, refuses an empty training set,
keeps its memory bank within the stated bound; and `mmad eval --baseline knn` reports it beside the model."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from sklearn.metrics import roc_auc_score

from mmad.runtime.cli import main as mmad
from mmad.samples.make_dataset import make_dataset
from mmad.training.baseline import GRID, KnnBaseline
from mmad.training.config import tiny_preset
from mmad.training.data import ImageTransform, TestDataset, TrainDataset, find_categories
from mmad.training.encoders import build_encoder
from mmad.training.evaluate import predict
from mmad.training.models import AnomalyModel


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("knn")
    return make_dataset(root, ["object", "texture"], n_train=8, n_test_good=4, n_test_defect_per_type=2, seed=11)


@pytest.fixture(scope="module")
def model():
    """The tiny model on the real EfficientNet-Lite0 weights (the baseline uses only its encoder)."""
    cfg = tiny_preset().model
    return AnomalyModel(cfg, build_encoder(cfg.encoder)).eval()


def test_knn_separates_generated_defects(data, model):
    categories, transform = find_categories([str(data)]), ImageTransform()
    knn = KnnBaseline(model, bank_size=2000).fit(TrainDataset(categories, transform))
    preds = predict(knn, TestDataset(categories, transform), "cpu", progress=False)
    assert set(preds) == {"object", "texture"}
    for category, p in preds.items():
        assert 0 < p.labels.sum() < len(p.labels)
        assert roc_auc_score(p.labels, p.scores) >= 0.9, category
        assert roc_auc_score(p.masks.ravel(), p.maps.ravel()) >= 0.8, category
        assert p.maps.shape[1:] == (256, 256)


def test_knn_refuses_an_empty_training_set(data, model):
    empty = [replace(c, train=[]) for c in find_categories([str(data)])]
    with pytest.raises(ValueError, match="no training images"):
        KnnBaseline(model).fit(TrainDataset(empty, ImageTransform()))
    with pytest.raises(ValueError, match="bank_size"):
        KnnBaseline(model, bank_size=0)


def test_knn_bank_stays_within_its_bound(data, model):
    categories = find_categories([str(data)])
    patches_per_category = 8 * GRID * GRID
    small = KnnBaseline(model, bank_size=500).fit(TrainDataset(categories, ImageTransform()))
    assert {c: len(b) for c, b in small.banks.items()} == {"object": 500, "texture": 500}
    large = KnnBaseline(model, bank_size=10 * patches_per_category).fit(TrainDataset(categories, ImageTransform()))
    assert all(len(b) == patches_per_category for b in large.banks.values())  # all there are, no repeats
    assert all(len(torch.unique(b, dim=0)) == len(b) for b in small.banks.values())
    with pytest.raises(ValueError, match="no memory bank for category 'other'"):
        small.predict(torch.zeros(1, 3, 256, 256), "other")


def test_eval_reports_the_baseline_beside_the_model(tiny_checkpoint, data, tmp_path):
    out = tmp_path / "eval"
    args = ["eval", "--checkpoint", str(tiny_checkpoint), "--data", str(data), "--out", str(out)]
    assert mmad([*args, "--baseline", "knn", "--baseline-bank-size", "300"]) == 0
    document = json.loads((out / "metrics.json").read_text())
    baseline = document["baseline"]
    assert baseline["method"] == "knn" and baseline["bank_patches"] == {"object": 300, "texture": 300}
    assert set(baseline["per_category"]) == set(document["per_category"]) == {"object", "texture"}
    for category, values in baseline["model_minus_baseline"].items():
        if category != "mean":
            expected = document["per_category"][category]["P-AUROC"] - baseline["per_category"][category]["P-AUROC"]
            assert values["P-AUROC"] == pytest.approx(expected)
    markdown = (out / "metrics.md").read_text()
    assert "## Baseline: knn" in markdown and "300 patches" not in markdown.split("## Baseline")[0]
