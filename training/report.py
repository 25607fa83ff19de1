"""Evaluation reports: metric tables (JSON, Markdown, CSV) and diagnostic figures (PNG).

Tables take the per-category dicts of ``metrics.compute_metrics`` (values in percent). Figures use
matplotlib's object API with the Agg canvas, never pyplot, so they work headless and leave no
global state behind; matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from .metrics import ALL_KEYS, mean_metrics

MEAN_ROW = "mean"
MAP_COLORMAP = "jet"
MASK_CONTOUR_COLOR = "lime"
GRID_COLUMNS = 6
CELL_INCHES = 2.4
FIGURE_DPI = 100
CURVES_FILE = "curves.png"  # written into the checkpoint folder after every epoch
CURVE_METRICS = ("I-AUROC", "P-AUROC")


class MetricsPaths(NamedTuple):
    json: Path
    markdown: Path
    csv: Path


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------
def write_metrics(
    out_dir,
    per_category: Mapping[str, Mapping[str, float]],
    meta: Mapping | None = None,
    baseline: Mapping | None = None,
) -> MetricsPaths:
    """Write ``metrics.json``, ``metrics.md`` and ``metrics.csv`` into ``out_dir`` (created).

    per_category: {category: {"I-AUROC": .., ..., "mAD": ..}} in percent, every key of
        ``metrics.ALL_KEYS`` present.
    meta: JSON-serialisable run information (config, AUPRO variant, checkpoint, ...); Paths
        become strings.
    baseline: a method scored on the same images, {"method": name, "description": text,
        "per_category": {...}, ...} (evaluate.evaluate_knn_baseline): written to metrics.json under
        "baseline" (with "model_minus_baseline" per category) and as tables below the model's in metrics.md.

    metrics.json is ``{"per_category": {...}, "mean": {...}, "meta": {...}}``; NaN is written as
    null (strict JSON). The Markdown table has one row per category plus a bold mean row, one
    decimal; the CSV has the same rows at full precision, the mean last.
    """
    _check_per_category(per_category)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = {category: {key: float(per_category[category][key]) for key in ALL_KEYS} for category in per_category}
    mean = mean_metrics(rows)

    paths = MetricsPaths(out_dir / "metrics.json", out_dir / "metrics.md", out_dir / "metrics.csv")
    document = {"per_category": rows, "mean": mean, "meta": _jsonable_meta(meta or {})}
    markdown = metrics_markdown(rows, mean)
    if baseline is not None:
        document["baseline"], compared = _with_difference(baseline, rows)
        markdown += baseline_markdown(document["baseline"], compared)
    paths.json.write_text(json.dumps(_nan_to_none(document), indent=2, allow_nan=False) + "\n")
    paths.markdown.write_text(markdown)
    _write_csv(paths.csv, rows, mean)
    return paths


def metrics_markdown(rows: Mapping[str, Mapping[str, float]], mean: Mapping[str, float]) -> str:
    """A Markdown table: Category | I-AUROC | ... | mAD, one decimal, the mean row in bold."""
    lines = ["| Category | " + " | ".join(ALL_KEYS) + " |", "|---|" + "---:|" * len(ALL_KEYS)]
    for category, values in rows.items():
        lines.append(f"| {category} | " + " | ".join(_one_decimal(values[k]) for k in ALL_KEYS) + " |")
    lines.append(f"| **{MEAN_ROW}** | " + " | ".join(f"**{_one_decimal(mean[k])}**" for k in ALL_KEYS) + " |")
    return "\n".join(lines) + "\n"


def _with_difference(baseline: Mapping, rows: Mapping[str, Mapping[str, float]]) -> tuple[dict, dict]:
    """The baseline's JSON entry with "model_minus_baseline" per category (and mean) added, and its rows."""
    _check_per_category(baseline["per_category"])
    base = {
        category: {key: float(values[key]) for key in ALL_KEYS} for category, values in baseline["per_category"].items()
    }
    shared = [category for category in rows if category in base]
    difference = {c: {k: rows[c][k] - base[c][k] for k in ALL_KEYS} for c in shared}
    entry = {**_jsonable_meta(baseline), "per_category": base, "mean": mean_metrics(base)}
    entry["model_minus_baseline"] = {**difference, MEAN_ROW: mean_metrics(difference)} if shared else {}
    return entry, base


def baseline_markdown(entry: Mapping, base: Mapping[str, Mapping[str, float]]) -> str:
    """The baseline's table and the model − baseline table (positive: the model is better)."""
    text = f"\n## Baseline: {entry.get('method', '?')}\n\n{entry.get('description', '')}\n\n"
    text += metrics_markdown(base, entry["mean"])
    difference = dict(entry["model_minus_baseline"])
    if difference:
        mean = difference.pop(MEAN_ROW)
        text += "\n## Model − baseline (points; positive: the model is better)\n\n" + metrics_markdown(difference, mean)
    return text


def _write_csv(path: Path, rows, mean) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["category", *ALL_KEYS])
        for category, values in [*rows.items(), (MEAN_ROW, mean)]:
            writer.writerow([category, *(repr(float(values[k])) for k in ALL_KEYS)])


def _check_per_category(per_category) -> None:
    if not per_category:
        raise ValueError("per_category: no categories to write")
    if MEAN_ROW in per_category:
        raise ValueError(f"per_category: {MEAN_ROW!r} is reserved for the mean row")
    for category, values in per_category.items():
        missing = [key for key in ALL_KEYS if key not in values]
        if missing:
            raise ValueError(f"per_category[{category!r}]: missing metrics {missing}")


def _one_decimal(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.1f}"


def _nan_to_none(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(item) for item in value]
    return value


def _jsonable_meta(meta: Mapping) -> dict:
    def convert(value, where: str):
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, Mapping):
            return {str(k): convert(v, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [convert(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if value is None or isinstance(value, (str, bool, int, float)):
            return value
        raise ValueError(
            f"{where}: {type(value).__name__} is not JSON-serialisable; pass plain "
            "values (dataclasses.asdict for a config)"
        )

    return convert(meta, "meta")


# ----------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------
def save_overlay_grid(
    path, images, maps, masks, scores, labels, titles: Sequence[str] | None = None, max_items: int = 24
) -> Path:
    """A PNG grid: each test image with its anomaly map as a heat overlay and the GT contour
    (overlay_grid_figure, saved to ``path``)."""
    return _save(overlay_grid_figure(images, maps, masks, scores, labels, titles, max_items), path)


def overlay_grid_figure(images, maps, masks, scores, labels, titles: Sequence[str] | None = None, max_items: int = 24):
    """The overlay grid as a matplotlib Figure: one tile per shown image, captioned with its title.

    images [N,H,W,3] uint8, maps [N,H,W] float, masks [N,H,W] bool, scores [N], labels [N] {0,1},
    titles: N strings (file names: `mmad eval` passes category/type/stem; without titles a tile says
    its index). All maps share one colour scale (min-max over the shown maps), so colours compare
    across tiles. With more than ``max_items`` images, an even spread of normal and of defective
    ones is shown (half each when both have enough), chosen without randomness so reruns show the
    same images.
    """
    images, maps, masks, scores, labels = _check_figure_inputs(images, maps, masks, scores, labels)
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"titles: expected {len(images)} strings, got {len(titles)}")
    chosen = pick_mixed_indices(labels, max_items)
    low, high = float(maps[chosen].min()), float(maps[chosen].max())
    high = high if high > low else low + 1.0

    columns = min(GRID_COLUMNS, len(chosen))
    grid_rows = math.ceil(len(chosen) / columns)
    figure = _new_figure(columns * CELL_INCHES, grid_rows * (CELL_INCHES + 0.3))
    for tile, index in enumerate(chosen):
        axes = figure.add_subplot(grid_rows, columns, tile + 1)
        axes.imshow(images[index])
        axes.imshow(maps[index], cmap=MAP_COLORMAP, alpha=0.45, vmin=low, vmax=high)
        if masks[index].any():
            axes.contour(masks[index].astype(np.float32), levels=[0.5], colors=MASK_CONTOUR_COLOR, linewidths=1.0)
        name = f"{titles[index]}\n" if titles is not None else f"#{index}\n"
        state = "defect" if labels[index] else "good"
        axes.set_title(f"{name}score {scores[index]:.4g} | {state}", fontsize=7)
        axes.set_axis_off()
    figure.tight_layout()
    return figure


def save_score_histogram(path, scores, labels, thresholds: Mapping[str, float] | None = None, bins: int = 40) -> Path:
    """A PNG histogram of image scores (score_histogram_figure, saved to ``path``)."""
    return _save(score_histogram_figure(scores, labels, thresholds, bins), path)


def score_histogram_figure(scores, labels, thresholds: Mapping[str, float] | None = None, bins: int = 40):
    """A histogram of image scores, normal vs. defective, with one labelled vertical line per threshold.

    scores [N] float, labels [N] {0,1}; thresholds: {label: image-score threshold}, only thresholds
    on image scores (thresholds.threshold_lines picks them from a checkpoint), e.g.
    {"deployment (gumbel, 40 normal images)": 0.41, "F1-optimal (test labels)": 0.37}.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(f"scores/labels: expected two [N] arrays, got {scores.shape} and {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels: expected only 0 and 1")
    edges = np.histogram_bin_edges(scores, bins=bins)

    figure = _new_figure(7.0, 4.0)
    axes = figure.add_subplot(1, 1, 1)
    for label, name, colour in ((0, "normal", "tab:blue"), (1, "defective", "tab:red")):
        chosen = scores[labels == label]
        axes.hist(chosen, bins=edges, alpha=0.55, color=colour, label=f"{name} (n={chosen.size})")
    line_colours = ("black", "tab:green", "tab:purple", "tab:orange", "tab:brown")
    for number, (name, value) in enumerate((thresholds or {}).items()):
        axes.axvline(
            float(value),
            color=line_colours[number % len(line_colours)],
            linestyle="--",
            linewidth=1.2,
            label=f"{name} = {float(value):.4g}",
        )
    axes.set_xlabel("image score")
    axes.set_ylabel("images")
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def save_training_curves(path, history: Sequence[Mapping]) -> Path:
    """A PNG of the training curves (training_curves_figure, saved to ``path``)."""
    return _save(training_curves_figure(history), path)


def training_curves_figure(history: Sequence[Mapping]):
    """Loss per epoch and, where the run evaluated, I-AUROC and P-AUROC per category per epoch.

    history: the checkpoint's entries, one per epoch, {"epoch": e, "loss": l, ...}; an evaluated
    epoch also holds {category: {"I-AUROC": .., "P-AUROC": .., ...}}. A curve still rising at the
    last epoch says more epochs would help.
    """
    epochs = [entry["epoch"] for entry in history if "loss" in entry]
    if not epochs:
        raise ValueError("history: no epoch with a loss to draw")
    evaluated = [entry for entry in history if any(isinstance(v, Mapping) for v in entry.values())]
    figure = _new_figure(4.2 * (1 + len(CURVE_METRICS) * bool(evaluated)), 3.4)
    axes = figure.add_subplot(1, 1 + len(CURVE_METRICS) * bool(evaluated), 1)
    axes.plot(epochs, [entry["loss"] for entry in history if "loss" in entry], marker=".")
    axes.set(xlabel="epoch", ylabel="training loss", yscale="log", title="loss")
    for panel, metric in enumerate(CURVE_METRICS if evaluated else (), start=2):
        axes = figure.add_subplot(1, 1 + len(CURVE_METRICS), panel)
        categories = sorted({k for entry in evaluated for k, v in entry.items() if isinstance(v, Mapping)})
        for category in categories:
            points = [(e["epoch"], e[category][metric]) for e in evaluated if metric in e.get(category, {})]
            axes.plot(*zip(*points), marker="o", label=category)
        axes.set(xlabel="epoch", ylabel=f"{metric} (%)", title=f"{metric} during training")
        axes.legend(fontsize=7)
    figure.tight_layout()
    return figure


def pick_mixed_indices(labels: np.ndarray, max_items: int) -> np.ndarray:
    """Sorted indices of at most ``max_items`` items: an even spread over the normal ones and over
    the defective ones, half each when both groups are large enough (deterministic)."""
    if max_items < 1:
        raise ValueError(f"max_items: expected >= 1, got {max_items}")
    labels = np.asarray(labels)
    if labels.size <= max_items:
        return np.arange(labels.size)
    normal, defective = np.flatnonzero(labels == 0), np.flatnonzero(labels != 0)
    n_defective = min(defective.size, max(max_items - normal.size, max_items // 2))
    n_normal = min(normal.size, max_items - n_defective)
    return np.sort(np.concatenate([_spread(normal, n_normal), _spread(defective, n_defective)]))


def _spread(indices: np.ndarray, count: int) -> np.ndarray:
    if count <= 0:
        return indices[:0]
    return indices[np.linspace(0, indices.size - 1, count).round().astype(int)]


def _check_figure_inputs(images, maps, masks, scores, labels):
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images: expected uint8 [N,H,W,3], got {images.dtype} {images.shape}")
    n, height, width = images.shape[:3]
    maps, masks = np.asarray(maps, dtype=np.float32), np.asarray(masks).astype(bool)
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    for name, array, shape in (
        ("maps", maps, (n, height, width)),
        ("masks", masks, (n, height, width)),
        ("scores", scores, (n,)),
        ("labels", labels, (n,)),
    ):
        if array.shape != shape:
            raise ValueError(f"{name}: expected shape {shape} to match images, got {array.shape}")
    if n == 0:
        raise ValueError("images: nothing to draw")
    return images, maps, masks, scores, labels


def _new_figure(width_inches: float, height_inches: float):
    from matplotlib.figure import Figure  # imported here: tables need no matplotlib

    return Figure(figsize=(width_inches, height_inches), dpi=FIGURE_DPI)


def _save(figure, path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)  # attaches the Agg canvas: no pyplot, no global backend
    figure.savefig(path, format="png")
    return path
