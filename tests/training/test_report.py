"""Report files: tables (JSON / Markdown / CSV) and PNG figures."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from mmad.training import report as R
from mmad.training.metrics import ALL_KEYS


def category_metrics(offset: float) -> dict[str, float]:
    return {key: 50.0 + offset + index for index, key in enumerate(ALL_KEYS)}


@pytest.fixture
def per_category():
    return {"bottle": category_metrics(10.04), "magnetic_tile": category_metrics(-3.0)}


def test_write_metrics_files_and_json_structure(tmp_path, per_category):
    meta = {"aupro": "sklearn", "checkpoint": tmp_path / "ckpt.safetensors", "epochs": np.int64(3)}
    paths = R.write_metrics(tmp_path / "eval", per_category, meta)
    assert all(path.is_file() for path in paths)

    document = json.loads(paths.json.read_text())
    assert set(document) == {"per_category", "mean", "meta"}
    assert document["per_category"]["bottle"] == pytest.approx(per_category["bottle"])
    assert list(document["mean"]) == list(ALL_KEYS)
    for key in ALL_KEYS:
        expected = (per_category["bottle"][key] + per_category["magnetic_tile"][key]) / 2
        assert document["mean"][key] == pytest.approx(expected)
    assert document["meta"] == {"aupro": "sklearn", "checkpoint": str(tmp_path / "ckpt.safetensors"), "epochs": 3}


def test_markdown_table_rows_and_one_decimal(tmp_path, per_category):
    lines = R.write_metrics(tmp_path, per_category, {}).markdown.read_text().splitlines()
    assert lines[0] == "| Category | " + " | ".join(ALL_KEYS) + " |"
    assert len(lines) == 2 + len(per_category) + 1
    bottle_cells = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert bottle_cells[0] == "bottle"
    assert bottle_cells[1:] == [f"{per_category['bottle'][k]:.1f}" for k in ALL_KEYS]
    mean_cells = [cell.strip() for cell in lines[-1].strip("|").split("|")]
    assert mean_cells[0] == "**mean**"
    i_auroc_mean = (per_category["bottle"]["I-AUROC"] + per_category["magnetic_tile"]["I-AUROC"]) / 2
    assert mean_cells[1] == f"**{i_auroc_mean:.1f}**"


def test_csv_has_full_precision_rows_and_mean_last(tmp_path, per_category):
    with R.write_metrics(tmp_path, per_category, {}).csv.open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["category", *ALL_KEYS]
    assert [row[0] for row in rows[1:]] == ["bottle", "magnetic_tile", "mean"]
    assert float(rows[1][1]) == per_category["bottle"]["I-AUROC"]


def test_nan_becomes_null_and_bad_input_is_named(tmp_path, per_category):
    per_category["bottle"]["AUPRO"] = math.nan
    paths = R.write_metrics(tmp_path, per_category, {})
    document = json.loads(paths.json.read_text())
    assert document["per_category"]["bottle"]["AUPRO"] is None
    assert document["mean"]["AUPRO"] is None
    assert "| nan |" in paths.markdown.read_text()

    with pytest.raises(ValueError, match=r"missing metrics \['mAD'\]"):
        R.write_metrics(tmp_path, {"x": {k: 1.0 for k in ALL_KEYS if k != "mAD"}}, {})
    with pytest.raises(ValueError, match="meta.model: object"):
        R.write_metrics(tmp_path, {"x": category_metrics(0)}, {"model": object()})


def synthetic_images(n, size=64, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    labels = (np.arange(n) % 3 == 0).astype(int)
    masks = np.zeros((n, size, size), dtype=bool)
    masks[labels == 1, 20:40, 10:30] = True
    maps = (rng.random((n, size, size)) + masks).astype(np.float32)
    return images, maps, masks, maps.max(axis=(1, 2)), labels


def test_overlay_grid_png(tmp_path):
    images, maps, masks, scores, labels = synthetic_images(30)
    path = R.save_overlay_grid(
        tmp_path / "figs" / "grid.png",
        images,
        maps,
        masks,
        scores,
        labels,
        titles=[f"img{i:03d}" for i in range(30)],
        max_items=12,
    )
    with Image.open(path) as png:
        png.load()
        width, height = png.size
    assert png.format == "PNG"
    columns, rows = R.GRID_COLUMNS, 2  # 12 items
    assert width == round(columns * R.CELL_INCHES * R.FIGURE_DPI)
    assert height == round(rows * (R.CELL_INCHES + 0.3) * R.FIGURE_DPI)


def test_pick_mixed_indices_is_deterministic_and_balanced():
    labels = (np.arange(30) % 3 == 0).astype(int)  # 10 defective, 20 normal
    chosen = R.pick_mixed_indices(labels, 12)
    assert chosen.tolist() == R.pick_mixed_indices(labels, 12).tolist()
    assert len(chosen) == 12 and len(set(chosen.tolist())) == 12
    assert np.count_nonzero(labels[chosen]) == 6
    assert R.pick_mixed_indices(labels[:5], 12).tolist() == [0, 1, 2, 3, 4]
    few_normal = np.array([0, 0] + [1] * 20)
    assert np.count_nonzero(few_normal[R.pick_mixed_indices(few_normal, 12)] == 0) == 2


def test_overlay_grid_rejects_bad_shapes(tmp_path):
    images, maps, masks, scores, labels = synthetic_images(4)
    with pytest.raises(ValueError, match="maps: expected shape"):
        R.save_overlay_grid(tmp_path / "g.png", images, maps[:, :10], masks, scores, labels)
    with pytest.raises(ValueError, match="images: expected uint8"):
        R.save_overlay_grid(tmp_path / "g.png", images.astype(np.float32), maps, masks, scores, labels)


def test_score_histogram_png(tmp_path):
    rng = np.random.default_rng(1)
    labels = np.array([0] * 60 + [1] * 40)
    scores = rng.normal(labels * 2.0, 1.0)
    path = R.save_score_histogram(tmp_path / "hist.png", scores, labels, {"normal q0.99": 2.1, "F1-optimal": 1.0})
    with Image.open(path) as png:
        png.load()
        assert png.format == "PNG"
        assert png.size == (700, 400)
        # Not a blank canvas: bars and lines draw in several colours.
        assert len(png.convert("RGB").getcolors(maxcolors=1 << 16)) > 10


def test_score_histogram_draws_one_labelled_line_per_threshold_given():
    labels = np.array([0] * 30 + [1] * 10)
    scores = np.random.default_rng(2).normal(labels * 2.0, 1.0)
    lines = {"deployment (gumbel, 40 normal images)": 2.5, "F1-optimal (test labels)": 1.0}
    (axes,) = R.score_histogram_figure(scores, labels, lines).axes
    drawn = {line.get_label(): line.get_xdata()[0] for line in axes.get_lines()}
    assert drawn == {f"{name} = {value:.4g}": value for name, value in lines.items()}


def test_overlay_grid_captions_are_the_titles_given():
    images, maps, masks, scores, labels = synthetic_images(4)
    titles = [f"object/{'scratch' if label else 'good'}/{i:03d}" for i, label in enumerate(labels)]
    figure = R.overlay_grid_figure(images, maps, masks, scores, labels, titles)
    captions = [axes.get_title() for axes in figure.axes]
    assert [c.split("\n")[0] for c in captions] == titles
    assert captions[0].endswith("| defect") and captions[1].endswith("| good")


# --- the baseline beside the model, and the training curves ---------------------------------------------
def test_baseline_tables_and_model_minus_baseline(tmp_path, per_category):
    baseline = {"method": "knn", "description": "nearest neighbours", "per_category": {"bottle": category_metrics(0.0)}}
    paths = R.write_metrics(tmp_path, per_category, {"aupro": "sklearn"}, baseline=baseline)
    document = json.loads(paths.json.read_text())
    entry = document["baseline"]
    assert entry["method"] == "knn" and set(entry["per_category"]) == {"bottle"}
    # Only the categories both have are compared; bottle is 10.04 points better on every metric.
    assert set(entry["model_minus_baseline"]) == {"bottle", "mean"}
    assert entry["model_minus_baseline"]["bottle"] == pytest.approx({k: 10.04 for k in ALL_KEYS})
    markdown = paths.markdown.read_text()
    model_table, rest = markdown.split("## Baseline: knn")
    assert "| bottle | 60.0 |" in model_table and "| bottle | 50.0 |" in rest
    assert "| bottle | 10.0 | 10.0 |" in rest.split("## Model − baseline")[1]
    with pytest.raises(ValueError, match="missing metrics"):
        R.write_metrics(
            tmp_path, per_category, baseline={"method": "knn", "per_category": {"bottle": {"I-AUROC": 1.0}}}
        )


def test_training_curves_show_loss_and_the_evaluated_epochs(tmp_path):
    history = [{"epoch": e, "loss": 10.0 / e, "minutes": e} for e in range(1, 7)]
    for entry in history[1::2]:
        entry.update({c: {"I-AUROC": 80.0 + entry["epoch"], "P-AUROC": 90.0, "mAD": 70.0} for c in ("a", "b")})
    figure = R.training_curves_figure(history)
    loss_axes, image_axes, pixel_axes = figure.axes
    assert list(loss_axes.get_lines()[0].get_ydata()) == [10.0 / e for e in range(1, 7)]
    assert {line.get_label(): list(line.get_xdata()) for line in image_axes.get_lines()} == {
        "a": [2, 4, 6],
        "b": [2, 4, 6],
    }
    assert list(image_axes.get_lines()[0].get_ydata()) == [82.0, 84.0, 86.0]
    assert pixel_axes.get_title() == "P-AUROC during training"
    assert len(R.training_curves_figure(history[:1]).axes) == 1  # no evaluation yet: the loss alone
    with Image.open(R.save_training_curves(tmp_path / "curves.png", history)) as png:
        assert png.format == "PNG"
    with pytest.raises(ValueError, match="no epoch with a loss"):
        R.training_curves_figure([])
